"""Stage `evaluate`: every candidate's in-sample val, out-of-fold and test ranking loss."""

from __future__ import annotations

import numpy as np
import pandas as pd

from graphqa.evaluate import CANDIDATE_COLUMNS, candidates_table
from graphqa.maths.metrics import per_target_table, resample_targets


def test_candidates_table_puts_val_oof_and_test_side_by_side() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"T{i}" for i in range(20)], 8)
    true = rng.beta(0.5, 0.5, len(groups))
    tables = {
        "gnn": per_target_table(true + rng.normal(0, 0.3, len(true)), true, groups),
        "trees": per_target_table(true + rng.normal(0, 0.05, len(true)), true, groups),
    }
    test_gnn = float(tables["gnn"]["ranking_loss"].mean())
    candidates = {
        # an in-sample val number far too good, an OOF one close to test
        "gnn": {"val_ranking_loss": 0.0, "oof_ranking_loss": round(test_gnn, 6)},
        "trees": {"val_ranking_loss": 0.9, "oof_ranking_loss": 0.95},
        "blend": {"val_ranking_loss": 0.1, "oof_ranking_loss": 0.1},  # not in tables: skipped
    }
    table = candidates_table(candidates, tables, resample_targets(20, 500, 0), shipped="gnn")
    assert tuple(table.columns) == CANDIDATE_COLUMNS
    assert list(table["family"]) == ["gnn", "trees"]
    gnn = table.set_index("family").loc["gnn"]
    assert (
        bool(gnn["shipped"])
        and gnn["test_ci_low"] <= gnn["test_ranking_loss"] <= gnn["test_ci_high"]
    )
    assert bool(gnn["oof_inside_test_ci"]) and not bool(gnn["val_inside_test_ci"])
    trees = table.set_index("family").loc["trees"]
    assert not bool(trees["shipped"]) and not bool(trees["oof_inside_test_ci"])
    assert isinstance(table, pd.DataFrame)
