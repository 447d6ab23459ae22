"""Stage ``flt_retrain@<keep>-<seed>``: retrain the sweep winner's recipe on one FLT mask.

Same training code as every run (:func:`graphqa.train.train_stage`); only the feature mask and
the seed change, so each keep fraction is compared with the unpruned retrain of the same seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphqa.config import Params, parse_params
from graphqa.contract import read_json
from graphqa.layout import ModelPaths
from graphqa.maths.flt import mask_filename, retrain_name
from graphqa.selection import WINNER_DIR
from graphqa.train import train_stage


def flt_retrain_stage(
    *,
    params: Params,
    keep_frac: float,
    seed: int,
    flt_dir: str | Path,
    selection_dir: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``flt_retrain@<f>-<seed>``: the sweep winner's recipe, from scratch,
    on the masked features (same training code, ``feature_mask`` params) with
    ``dataloader.seed = seed``, so each fraction can be compared with the unpruned retrain.

    The keep-1.0 retrain of a seed is the paired reference of every fraction of that seed.
    Reads ``<selection_dir>/winner/summary.json`` (the recipe),
    ``<flt_dir>/flt_mask_keep_<keep_frac>.json`` and what :func:`graphqa.train.train_stage`
    reads from ``schema_dir``. Writes an ordinary run folder into ``out_dir``
    (:func:`graphqa.train.train_stage`).

    Args:
        params: the params (``flt`` section; the rest comes from the winner's recipe).
        keep_frac: the keep fraction whose mask is used.
        seed: the retrain's ``dataloader.seed``.
        flt_dir: stage ``flt``'s folder.
        selection_dir: stage ``selection``'s folder.
        schema_dir: stage ``schema``'s folder.
        out_dir: the run folder to write.

    Returns:
        The run's ``summary.json`` content.
    """
    recipe = read_json(ModelPaths(Path(selection_dir) / WINNER_DIR).summary)["params"]
    overrides = {
        "feature_mask.path": (Path(flt_dir) / mask_filename(keep_frac)).as_posix(),
        "feature_mask.apply_to": ["node", "topology", "edge"],
        "feature_mask.strict": True,
        **params.flt.retrain_overrides,
        "dataloader.seed": seed,
    }
    run_params = parse_params({**recipe, "flt": params.flt.model_dump(mode="json")}, overrides)
    return train_stage(
        params=run_params,
        schema_dir=schema_dir,
        run_dir=out_dir,
        run_name=f"flt-keep{retrain_name(keep_frac, seed)}",
    )
