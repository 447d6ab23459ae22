"""The model that calibration, the bundle and evaluation use.

By default it is the final selection's winner. With ``flt.adopt: true`` it is the FLT retrain
that ``flt_summary`` recommends (the smaller feature set that the evidence says is not worse),
so "lock in a feature subset, then retrain and run inference as usual" is one param and a path
in the DAG, not a hand-edited ``feature_mask.path`` that points downstream of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graphqa.contract import atomic_dir, write_json
from graphqa.select import MODEL_CARD, WINNER_FILES, copy_winner


def choose_final_model(
    *,
    adopt_flt: bool,
    final_selection_dir: str | Path,
    recommendation_path: str | Path,
    retrain_root: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Copy the shipped model's files to ``out_dir`` and write ``model.json`` saying which
    model it is and why."""
    final_selection_dir = Path(final_selection_dir)
    recommendation = json.loads(Path(recommendation_path).read_text())
    keep = recommendation["keep_fraction"]
    selection = json.loads((final_selection_dir / "selection.json").read_text())
    if adopt_flt:
        # The recommended fraction's best seed (flt_summary picks it by the selection rule).
        run = recommendation["run"]
        source = Path(retrain_root) / run
        card = {
            "model": f"flt_retrain/{run}",
            "reason": f"flt.adopt is true: FLT recommends keep {keep:g} ({recommendation['rule']})",
        }
    else:
        source = final_selection_dir / "winner"
        card = {
            "model": selection["winner"],
            "reason": f"final selection: {selection['reason']} (flt.adopt is false; FLT "
            f"recommends keep {keep:g})",
        }
    card["flt_recommended_keep"] = keep
    with atomic_dir(out_dir) as tmp:
        copy_winner(source, tmp / "files")
        for name in WINNER_FILES:
            (tmp / "files" / name).rename(tmp / name)
        (tmp / "files").rmdir()
        write_json(tmp / MODEL_CARD, card)
    print(f"final model: {card['model']}: {card['reason']}")
    return card
