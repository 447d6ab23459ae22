"""Where each pipeline folder keeps its files, named once.

Every stage writes a folder that later stages, the CLI, the report and the tests read. Spelt
out at each use (``schema_dir / "packed" / "val.pt"``), a layout is a convention nobody owns and
one rename breaks readers silently; here each folder's files are the properties of one small
class, and every reader asks it.

- :class:`SchemaPaths`: stage ``schema``'s folder (``data/schema``): the resolved feature
  schema, the dataset coverage report and one packed tensor file per split;
- :class:`RunPaths`: one training run (``runs/train/<seed>-<variant>``, fine-tunes, FLT
  retrains): checkpoints, per-epoch metrics, the run summary;
- :class:`ModelPaths`: a chosen model (``runs/selection/winner``,
  ``runs/final_selection/winner``, ``runs/final_model``): its weights, its run's summary and
  schema, and (``final_model``) the model card saying which model and why.

The bundle's files are named in :mod:`graphqa.bundle` (its format is versioned there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The resolved feature schema, in the schema folder, every run folder and the bundle.
FEATURE_METADATA = "feature_metadata.json"
#: A run's (or a stage's) summary: status, params, chosen checkpoint, metrics.
SUMMARY = "summary.json"
#: A stage's metrics, tracked by DVC (``dvc metrics show``).
METRICS = "metrics.json"
#: The schema stage's report of labelled graphs found and used per split.
DATASET_COVERAGE = "dataset_coverage.json"
#: A chosen model's weights (a Lightning checkpoint) in its folder.
MODEL_CHECKPOINT = "model.ckpt"
#: The shipped model's card (which model, and why), written by the final_model stage.
MODEL_CARD = "model.json"
#: The files every chosen model's folder holds.
MODEL_FILES = (MODEL_CHECKPOINT, SUMMARY, FEATURE_METADATA)


def packed_path(packed_dir: str | Path, split: str) -> Path:
    """The packed file of one split inside a ``packed`` folder.

    Args:
        packed_dir: ``<schema_dir>/packed`` (or any folder of packed splits).
        split: ``train``, ``val``, ``val_calib``, ``test`` or ``tuning``.

    Returns:
        ``<packed_dir>/<split>.pt``.
    """
    return Path(packed_dir) / f"{split}.pt"


@dataclass(frozen=True)
class _Folder:
    """A pipeline folder: its root, and the feature schema every such folder carries."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def feature_metadata(self) -> Path:
        """The resolved feature schema (column names, dims, builder facts) of its data."""
        return self.root / FEATURE_METADATA


@dataclass(frozen=True)
class _TrainedFolder(_Folder):
    """A folder that holds a training run's results, with the run's summary."""

    @property
    def summary(self) -> Path:
        """Status, params, chosen checkpoint and metrics of the run."""
        return self.root / SUMMARY


@dataclass(frozen=True)
class SchemaPaths(_Folder):
    """The files of stage ``schema``'s folder.

    Args:
        root: the folder (``data/schema`` in the pipeline).
    """

    @property
    def coverage(self) -> Path:
        """Labelled graphs found and used per split."""
        return self.root / DATASET_COVERAGE

    @property
    def packed_dir(self) -> Path:
        """The folder of packed splits (what :class:`graphqa.data.GraphQADataModule` reads)."""
        return self.root / "packed"

    def packed(self, split: str) -> Path:
        """The packed tensor file of one split (:func:`packed_path`)."""
        return packed_path(self.packed_dir, split)


@dataclass(frozen=True)
class RunPaths(_TrainedFolder):
    """The files of one training run's folder.

    Args:
        root: the run folder (e.g. ``runs/train/0-base``).
    """

    @property
    def checkpoints(self) -> Path:
        """Checkpoint folder (``best.ckpt``, ``last.ckpt``, ranked links)."""
        return self.root / "checkpoints"

    @property
    def metrics_csv(self) -> Path:
        """One row per epoch."""
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        """The run's final metrics (DVC-tracked)."""
        return self.root / METRICS

    @property
    def dvclive(self) -> Path:
        """DVCLive's folder (plots, params)."""
        return self.root / "dvclive"


@dataclass(frozen=True)
class ModelPaths(_TrainedFolder):
    """The files of a chosen model's folder (a selection's ``winner/``, ``runs/final_model``).

    Args:
        root: the folder.
    """

    @property
    def checkpoint(self) -> Path:
        """The model's weights."""
        return self.root / MODEL_CHECKPOINT

    @property
    def card(self) -> Path:
        """Which model ships and why (``runs/final_model`` only)."""
        return self.root / MODEL_CARD
