"""The embedded dataset: deterministic, in the graph-builder contract, with a known recipe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import ndtri
from torch_geometric.data import Data

from graphqa import dataset
from graphqa.config import DatasetConfig
from graphqa.contract import (
    EDGE_COLUMNS,
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    LABEL_COLUMNS,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    list_graph_files,
    load_graph,
    target_of,
)
from graphqa.manifest import manifest_entry

SPLITS = ("train", "val", "val_calib", "test")
NODE_DIM = 172
EDGE_DIM = 11
TOPO_DIM = 140


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def graphs(tiny_dataset: Path) -> dict[str, Data]:
    """``<TARGET>/<MODEL>`` -> loaded graph, for every .pt of the tiny dataset."""
    files = list_graph_files(tiny_dataset / "graphs")
    return {key: load_graph(path) for key, path in files.items()}


@pytest.fixture(scope="module")
def labels(tiny_dataset: Path) -> dict[str, pd.DataFrame]:
    return {
        s: pd.read_csv(
            tiny_dataset / "labels" / f"{s}.csv",
            dtype={"MODEL": str, "capri": str},
            keep_default_na=False,
        )
        for s in SPLITS
    }


# --------------------------------------------------------------------------------------------
# Determinism


def test_generation_is_byte_identical(tmp_path: Path, tiny_dataset_cfg: DatasetConfig) -> None:
    truth_a = dataset.generate_dataset(cfg=tiny_dataset_cfg, out_dir=tmp_path / "a")
    truth_b = dataset.generate_dataset(cfg=tiny_dataset_cfg, out_dir=tmp_path / "b")

    hashes_a, hashes_b = _sha256_tree(tmp_path / "a"), _sha256_tree(tmp_path / "b")
    expected_graphs = tiny_dataset_cfg.n_targets * tiny_dataset_cfg.models_per_target
    assert sum(name.endswith(".pt") for name in hashes_a) == expected_graphs
    assert {f"labels/{s}.csv" for s in SPLITS} <= hashes_a.keys()
    assert "ground_truth.json" in hashes_a
    assert hashes_a == hashes_b
    assert truth_a == truth_b == _read_json(tmp_path / "a" / "ground_truth.json")


def test_seed_changes_the_dataset(tmp_path: Path, tiny_dataset_cfg: DatasetConfig) -> None:
    dataset.generate_dataset(cfg=tiny_dataset_cfg, out_dir=tmp_path / "a")
    other = tiny_dataset_cfg.model_copy(update={"seed": tiny_dataset_cfg.seed + 1})
    dataset.generate_dataset(cfg=other, out_dir=tmp_path / "b")

    hashes_a, hashes_b = _sha256_tree(tmp_path / "a"), _sha256_tree(tmp_path / "b")
    changed = [k for k in hashes_a.keys() & hashes_b.keys() if hashes_a[k] != hashes_b[k]]
    assert any(k.endswith(".pt") for k in changed)
    assert "labels/train.csv" in changed


# --------------------------------------------------------------------------------------------
# Graph files honour the contract


def test_every_graph_round_trips_through_the_contract(
    graphs: dict[str, Data], tiny_dataset_cfg: DatasetConfig
) -> None:
    cfg = tiny_dataset_cfg
    assert len(graphs) == cfg.n_targets * cfg.models_per_target
    assert len(dataset.node_columns()) == NODE_DIM
    for key, data in graphs.items():
        target, model = key.split("/")
        assert target_of(model) == target

        n = data.x.shape[0]
        assert data.x.dtype == torch.float32
        assert data.x.shape == (n, NODE_DIM)
        assert cfg.min_nodes <= n <= cfg.max_nodes

        ei = data.edge_index
        assert ei.dtype == torch.int64
        assert ei.dim() == 2 and ei.shape[0] == 2
        assert int(ei.min()) >= 0 and int(ei.max()) < n
        assert bool((ei[0] != ei[1]).all()), f"{key}: self loop"
        pairs = set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
        assert pairs == {(j, i) for i, j in pairs}, f"{key}: knn graph not symmetric"

        assert data.edge_attr.dtype == torch.float32
        assert data.edge_attr.shape == (ei.shape[1], EDGE_DIM)
        assert torch.isfinite(data.x).all() and torch.isfinite(data.edge_attr).all()

        assert isinstance(data.metadata, dict)
        assert data.metadata["edge_module"] == dataset.EDGE_MODULE
        assert data.metadata["edge_feature_dim"] == EDGE_DIM
        assert not hasattr(data, "y") or data.y is None, "labels must not live in graph files"


def test_column_sidecars(tiny_dataset: Path) -> None:
    gdir = tiny_dataset / "graphs"
    node_cols = _read_json(gdir / NODE_COLUMNS)
    edge_cols = _read_json(gdir / EDGE_COLUMNS)
    topo_cols = _read_json(gdir / TOPOLOGY_COLUMNS)

    assert node_cols == dataset.node_columns()
    assert len(node_cols) == NODE_DIM and len(set(node_cols)) == NODE_DIM
    assert edge_cols == dataset.EDGE_COLUMN_NAMES
    assert len(edge_cols) == EDGE_DIM
    assert topo_cols[0] == "ID"
    assert len(topo_cols) == TOPO_DIM + 1
    assert topo_cols[1:] == node_cols[-TOPO_DIM:]


def test_manifest_hashes_match_graph_tensors(tiny_dataset: Path, graphs: dict[str, Data]) -> None:
    manifest = _read_json(tiny_dataset / "graphs" / GRAPH_MANIFEST)

    assert set(manifest) == {f"{key}.pt" for key in graphs}
    for key, data in graphs.items():
        assert manifest[f"{key}.pt"] == manifest_entry(data)


def test_graph_metadata_sidecar(tiny_dataset: Path, graphs: dict[str, Data]) -> None:
    meta = _read_json(tiny_dataset / "graphs" / GRAPH_METADATA)

    per_graph = {k: v for k, v in meta.items() if not k.startswith("_") and "/" in k}
    assert set(per_graph) == set(graphs)
    for key, entry in per_graph.items():
        assert entry["edge_module"] == dataset.EDGE_MODULE
        assert entry["edge_metadata"]["edge_count"] == graphs[key].edge_index.shape[1]
        assert entry["edge_metadata"]["feature_dim"] == EDGE_DIM
        assert entry["node_feature_dim"] == NODE_DIM
        assert entry["node_feature_columns"] == dataset.node_columns()

    assert meta["_node_schema"] == {"columns": dataset.node_columns(), "dim": NODE_DIM}
    assert meta["_edge_schema"]["dim"] == EDGE_DIM
    assert meta["_edge_schema"]["module"] == dataset.EDGE_MODULE
    assert meta["_topology_schema"]["columns"] == dataset.topology_columns()
    assert meta["_topology_schema"]["dim"] == TOPO_DIM
    assert (meta["node_feature_dim"], meta["edge_feature_dim"], meta["topology_feature_dim"]) == (
        NODE_DIM,
        EDGE_DIM,
        TOPO_DIM,
    )


# --------------------------------------------------------------------------------------------
# Labels and ground truth


def test_label_csvs(labels: dict[str, pd.DataFrame], graphs: dict[str, Data]) -> None:
    targets: dict[str, set[str]] = {}
    all_models: list[str] = []
    for split, frame in labels.items():
        assert list(frame.columns) == list(LABEL_COLUMNS)
        assert len(frame) > 0, f"{split} is empty"
        dockq = frame["dockq"].astype(float)
        assert dockq.between(0.0, 1.0).all()
        assert list(frame["capri"]) == [dataset.capri_class(v) for v in dockq]
        targets[split] = {target_of(m) for m in frame["MODEL"]}
        all_models.extend(frame["MODEL"])

    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not targets[a] & targets[b], f"targets shared by {a} and {b}"
    # every graph is labelled exactly once and every label has a graph
    assert sorted(all_models) == sorted(key.split("/")[1] for key in graphs)


def test_ground_truth_lists_signal_and_noise_groups(
    tiny_dataset: Path, labels: dict[str, pd.DataFrame]
) -> None:
    truth = _read_json(tiny_dataset / "ground_truth.json")

    signal, noise = truth["signal_groups"], truth["noise_groups"]
    assert signal == dataset.SIGNAL_WEIGHTS
    assert noise == dataset.NOISE_SLOTS
    assert len(noise) > 0
    assert not set(signal) & set(noise)
    assert set(dataset.TOPOLOGY_SLOTS) <= set(signal) | set(noise)

    node_cols = set(dataset.node_columns())
    for group in [*signal, *noise]:
        assert group in truth["group_columns"]
        if group not in ("edge.hist", "structure"):
            assert set(truth["group_columns"][group]) <= node_cols
    for split in SPLITS:
        assert truth["splits"][split]["graphs"] == len(labels[split])


def test_feature_columns_have_wildly_different_scales(graphs: dict[str, Data]) -> None:
    cols = dataset.node_columns()
    x = torch.cat([g.x for g in graphs.values()]).double()

    count_max = max(float(x[:, cols.index(c)].abs().max()) for c in cols if c.endswith(".count"))
    assert count_max > 50

    onehot = [i for i, c in enumerate(cols) if c.startswith(("SS8_", "AA_"))]
    assert len(onehot) == 29
    assert set(x[:, onehot].unique().tolist()) <= {0.0, 1.0}
    ss8 = [i for i, c in enumerate(cols) if c.startswith("SS8_")]
    assert bool((x[:, ss8].sum(1) == 1).all())

    rasa = x[:, cols.index("rasa")]
    assert float(rasa.min()) >= 0.0 and float(rasa.max()) <= 1.0

    std = x.std(0)
    assert float(std.max() / std[std > 0].min()) > 100


def test_dockq_from_score_is_monotone_and_mostly_low() -> None:
    z = np.linspace(-6, 6, 4001)
    q = dataset.dockq_from_score(z)
    assert bool(np.all(np.diff(q) >= 0))
    assert float(q.min()) >= 0.0 and float(q.max()) < 1.0
    assert float(q[-1]) > 0.9
    # the 62% quantile of the score is the incorrect/acceptable boundary
    assert float(dataset.dockq_from_score(np.array([ndtri(0.62)]))[0]) == pytest.approx(0.23)

    sample = dataset.dockq_from_score(np.random.default_rng(0).standard_normal(200_000))
    assert 0.60 < float((sample < 0.23).mean()) < 0.64
    assert 0.05 < float((sample >= 0.80).mean()) < 0.07


# --------------------------------------------------------------------------------------------
# Optional tuning split

#: Default config (48 targets, seed 7): target index -> split as assigned before the tuning
#: split existed. A zero tuning fraction must leave every split exactly as it was.
SPLITS_BEFORE_TUNING = {
    "train": [
        *(0, 1, 3, 4, 6, 9, 10, 12, 13, 14, 16, 17, 18, 19, 20, 22, 24, 27, 28, 32, 35, 36),
        *(37, 39, 40, 43, 44, 45, 47),
    ],
    "val": [7, 8, 26, 30, 33, 42, 46],
    "val_calib": [15, 23, 25, 29, 38],
    "test": [2, 5, 11, 21, 31, 34, 41],
}


def test_zero_tuning_fraction_keeps_every_split_as_before() -> None:
    cfg = DatasetConfig()
    assert cfg.split.tuning == 0.0
    targets = [f"T{i:03d}" for i in range(cfg.n_targets)]
    splits = dataset._split_targets(targets, cfg, np.random.default_rng(cfg.seed))
    assert splits == {s: [f"T{i:03d}" for i in v] for s, v in SPLITS_BEFORE_TUNING.items()}


def test_tiny_dataset_has_header_only_tuning_labels_and_same_splits(
    tiny_dataset: Path, labels: dict[str, pd.DataFrame]
) -> None:
    assert (tiny_dataset / "labels" / "tuning.csv").read_text() == "MODEL,dockq,capri\n"
    by_split = {s: sorted({target_of(m) for m in f["MODEL"]}) for s, f in labels.items()}
    assert by_split == {  # as generated before the tuning split existed
        "train": ["T0002", "T0005", "T0007", "T0008"],
        "val": ["T0006"],
        "val_calib": ["T0001", "T0003"],
        "test": ["T0004"],
    }
    assert "tuning" not in _read_json(tiny_dataset / "ground_truth.json")["splits"]


def test_tuning_fraction_assigns_disjoint_tuning_targets(
    tmp_path: Path, tiny_dataset_cfg: DatasetConfig
) -> None:
    split = {"train": 0.4, "val": 0.1, "val_calib": 0.1, "test": 0.1, "tuning": 0.3}
    cfg = tiny_dataset_cfg.model_copy(update={"n_targets": 10, "split": split})
    cfg = DatasetConfig.model_validate(cfg.model_dump())
    dataset.generate_dataset(cfg=cfg, out_dir=tmp_path / "ds")
    targets = {
        s: {
            target_of(m)
            for m in pd.read_csv(tmp_path / "ds" / "labels" / f"{s}.csv", dtype={"MODEL": str})[
                "MODEL"
            ]
        }
        for s in (*SPLITS, "tuning")
    }
    assert len(targets["tuning"]) == 3 and len(targets["train"]) == 4
    union = set().union(*targets.values())
    assert len(union) == sum(len(t) for t in targets.values()) == 10
    truth = _read_json(tmp_path / "ds" / "ground_truth.json")
    assert truth["splits"]["tuning"]["targets"] == 3
