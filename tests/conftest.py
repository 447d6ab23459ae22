"""Shared fixtures: the real config shrunk to a tiny profile, outputs under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphqa.config import DatasetConfig, Params, parse_params
from graphqa.dataset import dataset_stage
from graphqa.schema import schema_stage

REPO = Path(__file__).resolve().parents[1]
#: The users' system beside the checkout (``../shared``), else where this workplace keeps it.
SHARED = next(
    (p for p in (REPO.parent / "shared", Path("/work/shared")) if p.is_dir()),
    REPO.parent / "shared",
)
#: The graph builder's own tiny output (written independently of graphqa; never regenerate it).
BUILDER_SAMPLE = SHARED / "fixtures" / "builder_sample"

# Tiny profile: same sections as params.yaml, sized so a stage runs in seconds on 2 CPU cores.
TINY_OVERRIDES = {
    "dataset.n_targets": 8,
    "dataset.models_per_target": 6,
    "dataset.min_nodes": 8,
    "dataset.max_nodes": 16,
    "dataset.knn": 4,
    "model.hidden_dim": 16,
    "model.attention_head": 2,
    "model.num_layers": 1,
    "dataloader.batch_size": 8,
    "trainer.max_epochs": 2,
    "trainer.num_threads": 1,
    "logging.progress": "none",
    "sweep.seeds": [0],
    "finetune.phase1.overrides": {"optimizer.learning_rate": 0.001, "trainer.max_epochs": 1},
    "finetune.phase2.seeds": [101],
    "finetune.phase2.overrides": {"optimizer.learning_rate": 0.001, "trainer.max_epochs": 1},
    "flt.keep_fracs": [1.0, 0.5],
    "flt.seeds": [0],
    "flt.retrain_overrides": {},  # retrains use the profile's epochs, not the default budget
    "flt.permutation_repeats": 1,
    "cv.folds": 3,
    "cv.fold_ids": [0, 1, 2],
    "trees.grid": {"gbdt": {}, "lambdarank": {"objective": "lambdarank", "min_data_in_leaf": 2}},
}

os.environ.setdefault("DVCLIVE_OPEN", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def label_files(root: Path) -> dict[str, str]:
    return {s: str(root / "labels" / f"{s}.csv") for s in ("train", "val", "val_calib", "test")}


@pytest.fixture(scope="session")
def tiny_params() -> Params:
    return parse_params({}, TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_dataset_cfg(tiny_params: Params) -> DatasetConfig:
    return tiny_params.dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_cfg: DatasetConfig) -> Path:
    """A generated dataset folder (graphs/, labels/, ground_truth.json). Treat as read-only."""
    out = tmp_path_factory.mktemp("tiny") / "dataset"
    dataset_stage(cfg=tiny_dataset_cfg, out_dir=out)
    return out


@pytest.fixture(scope="session")
def tiny_schema_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output of the schema stage on the tiny dataset (feature_metadata.json, packed/)."""
    out = tmp_path_factory.mktemp("tiny_schema") / "schema"
    schema_stage(
        graph_dir=tiny_dataset / "graphs", label_files=label_files(tiny_dataset), out_dir=out
    )
    return out


@pytest.fixture(scope="session")
def tiny_run(
    tiny_params: Params, tiny_schema_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished 2-epoch training run folder on the tiny profile. Treat as read-only."""
    from graphqa.train import train_stage

    run_dir = tmp_path_factory.mktemp("runs") / "train" / "0-base"
    train_stage(params=tiny_params, schema_dir=tiny_schema_dir, run_dir=run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_trees_dir(
    tiny_params: Params, tiny_schema_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Output of the trees stage on the tiny profile (model.txt, summary.json). Read-only."""
    from graphqa.trees import trees_stage

    out = tmp_path_factory.mktemp("tiny_trees") / "trees"
    trees_stage(params=tiny_params, schema_dir=tiny_schema_dir, out_dir=out)
    return out
