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

from graphqa.files import atomic_dir, write_json
from graphqa.layout import MODEL_CARD, MODEL_FILES
from graphqa.selection import copy_winner


def final_model_stage(
    *,
    adopt_flt: bool,
    final_selection_dir: str | Path,
    recommendation_path: str | Path,
    retrain_root: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``final_model``: put the shipped model's files in one place, with a
    card saying which model it is and why, so calibration, bundle and evaluation read one path.

    Reads ``recommendation_path`` and ``<final_selection_dir>/selection.json``, then the
    source's ``summary.json``, ``feature_metadata.json`` and checkpoint: with ``adopt_flt``
    the recommended retrain ``<retrain_root>/<run>/`` (``checkpoints/best.ckpt``), otherwise
    ``<final_selection_dir>/winner/`` (``model.ckpt``). Writes into ``out_dir`` (atomic
    swap): ``model.ckpt``, ``summary.json``, ``feature_metadata.json`` and ``model.json``.

    Args:
        adopt_flt: ``flt.adopt``: ship the recommended FLT retrain instead of the winner.
        final_selection_dir: stage ``final_selection``'s folder.
        recommendation_path: stage ``flt_summary``'s ``recommendation.json``.
        retrain_root: the folder of the FLT retrains (``runs/flt_retrain``).
        out_dir: the stage's output folder.

    Returns:
        The content of ``model.json`` (model, reason, FLT's recommended keep fraction).
    """
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
        for name in MODEL_FILES:
            (tmp / "files" / name).rename(tmp / name)
        (tmp / "files").rmdir()
        write_json(tmp / MODEL_CARD, card)
    print(f"final model: {card['model']}: {card['reason']}")
    return card
