"""Reference rankers: the exact random pick against brute force; deterministic pooled trees."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphqa.data import PackedSplit
from graphqa.maths.metrics import mse, per_target_table
from graphqa.reference import (
    TreesSettings,
    fit_pooled_trees,
    fit_trees_on_packed,
    random_pick_table,
)
from graphqa.schema import FeatureSchema

COLUMNS = ["best_dockq", "top1_dockq", "ranking_loss", "hits_023", "hits_049", "hits_080"]


def _brute_force(true: np.ndarray, top_k: int) -> pd.Series:
    """Mean of the per-target table over every ordering of one target's models."""
    groups = np.zeros(len(true), dtype=int)
    tables = [
        per_target_table(-np.array(order, dtype=float), true, groups, top_k=top_k)
        for order in itertools.permutations(range(len(true)))
    ]
    return pd.concat(tables).mean(numeric_only=True)


@pytest.mark.parametrize("top_k", [1, 2, 10])
def test_random_pick_is_the_exact_mean_over_all_orderings(top_k: int) -> None:
    # two targets, tied labels included; 5! and 4! orderings
    true = np.array([0.1, 0.3, 0.3, 0.6, 0.9, 0.05, 0.5, 0.85, 0.2])
    groups = np.array(["A"] * 5 + ["B"] * 4)
    table = random_pick_table(true, groups, top_k=top_k)
    for row, rows in zip(table.to_dict("records"), (slice(0, 5), slice(5, 9)), strict=True):
        brute = _brute_force(true[rows], top_k)
        for column in COLUMNS:
            assert row[column] == pytest.approx(brute[column]), column
        assert row["spearman"] == pytest.approx(brute["spearman"], abs=1e-12)  # both 0
    # by hand, target A: loss .9 - mean(.1 .3 .3 .6 .9) = .9 - .44; top-2 hits >= .23: 2 * 4/5
    if top_k == 2:
        assert table["ranking_loss"].iloc[0] == pytest.approx(0.46)
        assert table["hits_023"].iloc[0] == pytest.approx(1.6)


def _regression(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = 1 / (1 + np.exp(-(x[:, 0] - 0.5 * x[:, 1] ** 2))) + rng.normal(0, 0.05, n)
    return x, np.clip(y, 0, 1)


def test_trees_are_deterministic_and_stop_at_the_best_val_iteration() -> None:
    train_x, train_y = _regression(0, 300)
    val_x, val_y = _regression(1, 100)
    test_x, test_y = _regression(2, 100)
    settings = TreesSettings(max_iter=80, learning_rate=0.3)
    a = fit_pooled_trees(train_x, train_y, val_x, val_y, settings)
    b = fit_pooled_trees(train_x, train_y, val_x, val_y, settings)
    assert np.array_equal(a.predict(test_x), b.predict(test_x))
    assert len(a.val_mse) < 80  # stopped 20 iterations after the val minimum
    assert a.n_iter == int(np.argmin(a.val_mse)) + 1 == len(a.val_mse) - 20
    # the refit is the long fit cut at n_iter: its val loss is the curve's minimum
    assert mse(a.predict(val_x), val_y) == pytest.approx(min(a.val_mse), rel=1e-9)
    assert mse(a.predict(test_x), test_y) < mse(np.full(100, train_y.mean()), test_y) / 2


def test_trees_fit_on_the_packed_splits(tiny_schema_dir: Path) -> None:
    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    train = PackedSplit.load(tiny_schema_dir / "packed" / "train.pt")
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    fit = fit_trees_on_packed(train, val, schema, TreesSettings(max_iter=20))
    assert 1 <= fit.n_iter <= 20 and fit.model.n_features_in_ == 2 + 4 * (
        schema.node_dim + schema.edge_dim
    )
