"""What the out-of-fold evidence pools, and where the ``cv`` stages write it.

Named once here so stages ``cv`` and ``trees`` pool the same splits in the same order and stage
``scorer`` reads what ``cv`` writes (one ``<cv_root>/<fold>/oof.csv`` per fold), without the
scorer or the trees importing the training code.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from graphqa.contract import DataContractError
from graphqa.layout import SchemaPaths

#: Splits pooled into the folds, in this order (test and val_calib are never seen); the
#: last is optional (packed only when its label CSV has rows).
POOLED_SPLITS = ("train", "val", "tuning")

#: One fold's predictions of its held graphs.
OOF_FILE = "oof.csv"
#: Its columns: graph key, target, fold, DockQ label and the GNN's logit.
OOF_COLUMNS = ("key", "target", "fold", "dockq", "logit")


def pooled_splits(schema_dir: str | Path) -> list[str]:
    """The pooled splits stage ``schema`` packed into ``schema_dir`` (``tuning`` only if packed).

    Args:
        schema_dir: stage ``schema``'s folder.

    Returns:
        Split names, in :data:`POOLED_SPLITS` order.
    """
    paths = SchemaPaths(Path(schema_dir))
    return [s for s in POOLED_SPLITS if s != POOLED_SPLITS[-1] or paths.packed(s).is_file()]


def oof_path(cv_root: str | Path, fold: int) -> Path:
    """``<cv_root>/<fold>/oof.csv``: stage ``cv@<fold>``'s predictions."""
    return Path(cv_root) / str(fold) / OOF_FILE


def read_oof(cv_root: str | Path, fold_ids: list[int]) -> pd.DataFrame:
    """Every fold's ``oof.csv`` under ``cv_root`` (``<cv_root>/<fold>/oof.csv``), concatenated.

    Args:
        cv_root: the ``cv`` stages' parent folder (``runs/cv``).
        fold_ids: the folds expected (``cv.fold_ids``).

    Returns:
        One row per pooled graph: key, target, fold, dockq, logit.

    Raises:
        DataContractError: a fold file is missing or lacks a column.
    """
    frames = []
    for fold in fold_ids:
        path = oof_path(cv_root, fold)
        if not path.is_file():
            raise DataContractError(
                path, "<file>", f"stage cv@{fold}'s predictions", "no such file"
            )
        frame = pd.read_csv(path, dtype={"key": str, "target": str})
        missing = [c for c in OOF_COLUMNS if c not in frame.columns]
        if missing:
            raise DataContractError(path, missing[0], "a column of oof.csv", "missing")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
