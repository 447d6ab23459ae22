"""Deterministic embedded default dataset, written in exactly the graph-builder contract.

Each decoy has a hidden quality made of independent components, one per *signal* feature group
(basic residue columns, some topology slots, the edge distance histogram, interface size). Every
signal group encodes only its own component, so each is needed to predict the label and FLT can
be checked against the truth. The other topology slots vary per graph but carry no signal.
Columns come on very different scales (one-hots, degrees, raw counts, Å), as real builders emit,
so the pipeline's train-only standardisation is exercised by the default run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr
from scipy.stats import spearmanr
from torch_geometric.data import Data

from graphqa.config import DatasetConfig
from graphqa.contract import (
    BUILDER_SUMMARY,
    EDGE_COLUMNS,
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    atomic_dir,
    save_graph,
    write_json,
)
from graphqa.manifest import manifest_entry

BASIC_COLUMNS = [
    "rasa",
    "phi",
    "psi",
    *[f"SS8_{i}" for i in range(8)],
    *[f"AA_{i}" for i in range(21)],
]
TOPOLOGY_SLOTS = [
    "base",
    "primary.s0",
    "primary.s1",
    "primary.s2",
    "pair.s0_s1",
    "pair.s0_s2",
    "pair.s1_s2",
]
# (statistic, scale, integer?) per homology dimension; scales span 1 to ~100 like raw builders.
_TOPO_STATS = [
    ("count", 40.0, True),
    ("birth_mean", 2.0, False),
    ("death_mean", 4.0, False),
    ("persistence_mean", 1.5, False),
    ("persistence_max", 6.0, False),
    ("persistence_sum", 60.0, False),
    ("entropy", 1.0, False),
    ("betti_r4", 5.0, True),
    ("betti_r8", 15.0, True),
    ("betti_r12", 30.0, True),
]
TOPOLOGY_COLUMN_SUFFIXES = [f"h{dim}.{name}" for dim in (0, 1) for name, _, _ in _TOPO_STATS]
EDGE_HIST_BINS = 10
EDGE_COLUMN_NAMES = ["distance", *[f"hist_{b}" for b in range(EDGE_HIST_BINS)]]
EDGE_MODULE = "edge/hist10/v1"
TOPOLOGY_MODULE = "topology/persistence/v1"

#: Hidden label recipe: group -> weight of its component in the quality score.
SIGNAL_WEIGHTS = {
    "basic": 1.0,
    "base": 1.0,
    "primary.s0": 1.0,
    "pair.s0_s1": 0.8,
    "edge.hist": 0.8,
    "structure": 0.5,
}
NOISE_SLOTS = [s for s in TOPOLOGY_SLOTS if s not in SIGNAL_WEIGHTS]
_TARGET_SHARE = 0.6  # fraction of each component's std shared by all decoys of a target
_NODE_NOISE = 0.6  # per-node noise (in component units) of topology columns


def topology_columns() -> list[str]:
    return [f"{slot}.{suffix}" for slot in TOPOLOGY_SLOTS for suffix in TOPOLOGY_COLUMN_SUFFIXES]


def node_columns() -> list[str]:
    return BASIC_COLUMNS + topology_columns()


def dockq_from_score(z: np.ndarray) -> np.ndarray:
    """Monotone map of a N(0,1) quality score to a DockQ-like value, mostly low.

    Quantile ranges: 62% incorrect (<0.23), 20% acceptable, 12% medium, 6% high (>=0.80).
    """
    u = ndtr(z)
    knots_u = [0.0, 0.62, 0.82, 0.94, 1.0]
    knots_q = [0.0, 0.23, 0.49, 0.80, 0.98]
    low = 0.23 * np.power(np.clip(u / 0.62, 0, 1), 1.8)
    return np.where(u < 0.62, low, np.interp(u, knots_u, knots_q))


def capri_class(dockq: float) -> str:
    if dockq >= 0.80:
        return "High"
    if dockq >= 0.49:
        return "Medium"
    if dockq >= 0.23:
        return "Acceptable"
    return "Incorrect"


@dataclass(frozen=True)
class _Decoy:
    target: str
    model: str
    components: dict[str, float]
    noise_slots: dict[str, float]
    score: float


def _latent_scores(cfg: DatasetConfig, rng: np.random.Generator) -> list[_Decoy]:
    """Per-decoy signal components (target share + decoy part) and the combined score."""
    groups = list(SIGNAL_WEIGHTS)
    weights = np.array([SIGNAL_WEIGHTS[g] for g in groups])
    norm = math.sqrt(float((weights**2).sum()))
    share, own = math.sqrt(_TARGET_SHARE), math.sqrt(1 - _TARGET_SHARE)
    decoys = []
    for t in range(cfg.n_targets):
        target = f"T{t + 1:04d}"
        target_part = rng.standard_normal(len(groups))
        for m in range(cfg.models_per_target):
            comps = share * target_part + own * rng.standard_normal(len(groups))
            noise = rng.standard_normal(len(NOISE_SLOTS))
            decoys.append(
                _Decoy(
                    target=target,
                    model=f"{target}_m{m + 1:03d}",
                    components=dict(zip(groups, comps.tolist(), strict=True)),
                    noise_slots=dict(zip(NOISE_SLOTS, noise.tolist(), strict=True)),
                    score=float(weights @ comps / norm),
                )
            )
    return decoys


def _knn_edges(pos: np.ndarray, k: int) -> np.ndarray:
    """Symmetric k-nearest-neighbour edges as int64 [2, E], sorted, no self loops."""
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nbrs = np.argsort(dist, axis=1, kind="stable")[:, :k]
    src = np.repeat(np.arange(len(pos)), k)
    dst = nbrs.reshape(-1)
    pairs = np.unique(np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1), axis=1)
    return pairs.astype(np.int64)


def _topology_block(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """One slot's 20 columns for n nodes; ``level`` shifts every column (signal or noise)."""
    cols = []
    for _dim in (0, 1):
        for j, (_name, scale, integer) in enumerate(_TOPO_STATS):
            sign = 1.0 if j % 3 else -1.0
            raw = 0.5 + 0.6 * sign * level + _NODE_NOISE * rng.standard_normal(n)
            value = scale * np.logaddexp(0.0, raw)  # softplus keeps values positive
            cols.append(np.round(value) if integer else value)
    return np.stack(cols, axis=1)


def _make_graph(decoy: _Decoy, cfg: DatasetConfig, rng: np.random.Generator) -> Data:
    c = decoy.components
    frac = ndtr(0.9 * c["structure"] + 0.45 * rng.standard_normal())
    n = int(
        np.clip(
            round(cfg.min_nodes + (cfg.max_nodes - cfg.min_nodes) * frac),
            cfg.min_nodes,
            cfg.max_nodes,
        )
    )
    pos = rng.standard_normal((n, 3)) * (2.2 * n ** (1 / 3))
    edge_index = _knn_edges(pos, cfg.knn)

    rasa = np.clip(0.45 - 0.12 * c["basic"] + 0.2 * rng.standard_normal(n), 0.0, 1.0)
    phi = (-65.0 + 25.0 * c["basic"] + 40.0 * rng.standard_normal(n) + 180.0) % 360.0 - 180.0
    psi = (-40.0 + 60.0 * rng.standard_normal(n) + 180.0) % 360.0 - 180.0
    ss8 = np.eye(8)[rng.choice(8, size=n, p=[0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.1, 0.1])]
    aa = np.eye(21)[rng.integers(0, 21, size=n)]
    slots = []
    for slot in TOPOLOGY_SLOTS:
        level = c[slot] if slot in c else decoy.noise_slots[slot]
        slots.append(_topology_block(rng, n, level))
    x = np.concatenate([rasa[:, None], phi[:, None], psi[:, None], ss8, aa, *slots], axis=1)

    dist = np.linalg.norm(pos[edge_index[0]] - pos[edge_index[1]], axis=1)
    bins = np.arange(EDGE_HIST_BINS) + 0.5
    # Atom-pair distance counts: closer residues and better interfaces pack more short contacts.
    lam = 12.0 * np.exp(-0.5 * ((bins[None, :] - 0.6 * dist[:, None]) / 2.0) ** 2)
    lam = lam * np.exp(0.35 * c["edge.hist"] * (bins[None, :] < 5.0))
    hist = rng.poisson(lam).astype(np.float64)
    edge_attr = np.concatenate([dist[:, None], hist], axis=1)

    return Data(
        x=torch.from_numpy(x.astype(np.float32)),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr.astype(np.float32)),
        metadata={
            "edge_module": EDGE_MODULE,
            "edge_params": {"knn": cfg.knn, "histogram_bins": EDGE_HIST_BINS, "bin_width": 1.0},
            "edge_feature_dim": len(EDGE_COLUMN_NAMES),
        },
    )


def _label_noise_per_target(cfg: DatasetConfig, rng: np.random.Generator) -> dict[str, float]:
    """Label-noise sd of each target: hard targets are noisier, as on real data, so a guarantee
    calibrated on some targets (intervals, thresholds) is tested on targets unlike them."""
    targets = [f"T{t + 1:04d}" for t in range(cfg.n_targets)]
    if cfg.target_difficulty == 0:
        return dict.fromkeys(targets, cfg.label_noise)
    s = cfg.target_difficulty
    factor = np.exp(s * rng.standard_normal(len(targets)) - s * s / 2)
    return {t: float(cfg.label_noise * f) for t, f in zip(targets, factor, strict=True)}


def _split_targets(
    targets: list[str], cfg: DatasetConfig, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Targets -> split by fraction (largest remainder, at least one target per split).

    Zero-fraction splits (``tuning`` by default) get no targets and take no part in the
    rounding, so the other splits are exactly those of a config without them.
    """
    fracs = {name: frac for name, frac in cfg.split.model_dump().items() if frac > 0}
    order = list(rng.permutation(targets))
    exact = {k: v * len(order) for k, v in fracs.items()}
    counts = {k: max(1, math.floor(v)) for k, v in exact.items()}
    by_remainder = sorted(fracs, key=lambda k: exact[k] - math.floor(exact[k]), reverse=True)
    i = 0
    while sum(counts.values()) < len(order):
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > len(order):
        biggest = max(counts, key=counts.get)
        counts[biggest] -= 1
    splits, start = {}, 0
    for name in fracs:
        splits[name] = sorted(order[start : start + counts[name]])
        start += counts[name]
    return splits


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def generate_dataset(*, cfg: DatasetConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write graphs, sidecars, the builder summary, label CSVs and ``ground_truth.json``.

    Returns the ground-truth summary. The folder is swapped in atomically.
    """
    rng = np.random.default_rng(cfg.seed)
    decoys = _latent_scores(cfg, rng)
    scores = np.array([d.score for d in decoys])
    clean = dockq_from_score(scores)
    noise_sd = _label_noise_per_target(cfg, rng)
    per_decoy_sd = np.array([noise_sd[d.target] for d in decoys])
    labels = np.clip(clean + per_decoy_sd * rng.standard_normal(len(decoys)), 0.0, 1.0)
    labels = np.round(labels, 6)
    split_of_target = {
        t: name
        for name, ts in _split_targets(sorted({d.target for d in decoys}), cfg, rng).items()
        for t in ts
    }

    ncols, tcols = node_columns(), topology_columns()
    entries: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        graph_dir = tmp / "graphs"
        for decoy in decoys:
            data = _make_graph(decoy, cfg, rng)
            key = f"{decoy.target}/{decoy.model}"
            save_graph(data, graph_dir / f"{key}.pt")
            manifest[f"{key}.pt"] = manifest_entry(data, graph_dir / f"{key}.pt")
            entries[key] = {
                "edge_module": EDGE_MODULE,
                "edge_metadata": {
                    "edge_count": int(data.edge_index.shape[1]),
                    "feature_dim": len(EDGE_COLUMN_NAMES),
                },
                "node_feature_dim": len(ncols),
                "node_feature_columns": ncols,
            }
        write_json(graph_dir / GRAPH_METADATA, _graph_metadata(entries, cfg, ncols, tcols))
        write_json(graph_dir / NODE_COLUMNS, ncols)
        write_json(graph_dir / EDGE_COLUMNS, EDGE_COLUMN_NAMES)
        write_json(graph_dir / TOPOLOGY_COLUMNS, ["ID", *tcols])
        write_json(graph_dir / GRAPH_MANIFEST, manifest)
        write_json(tmp / BUILDER_SUMMARY, _builder_summary(len(decoys), ncols, tcols))

        frame = pd.DataFrame(
            {
                "MODEL": [d.model for d in decoys],
                "dockq": labels,
                "capri": [capri_class(v) for v in labels],
                "split": [split_of_target[d.target] for d in decoys],
            }
        )
        (tmp / "labels").mkdir()
        # tuning.csv always exists (header-only without tuning targets): params.yaml can
        # point paths.tuning_labels at it and DVC can track it as a dependency.
        for name in ("train", "val", "val_calib", "test", "tuning"):
            part = frame[frame["split"] == name].drop(columns="split")
            part.to_csv(tmp / "labels" / f"{name}.csv", index=False, float_format="%.6f")

        truth = _ground_truth(cfg, frame, clean, labels, noise_sd)
        write_json(tmp / "ground_truth.json", truth)
    return truth


def _graph_metadata(
    entries: dict[str, Any], cfg: DatasetConfig, ncols: list[str], tcols: list[str]
) -> dict[str, Any]:
    return {
        **entries,
        "_builder": {
            "name": "graphqa.embedded",
            "version": 1,
            "params": cfg.model_dump(mode="json"),
        },
        "_node_schema": {"columns": ncols, "dim": len(ncols)},
        "_edge_schema": {
            "columns": EDGE_COLUMN_NAMES,
            "dim": len(EDGE_COLUMN_NAMES),
            "module": EDGE_MODULE,
        },
        "_topology_schema": {"columns": tcols, "dim": len(tcols), "module": TOPOLOGY_MODULE},
        "_module_registry": {
            "edge": {"id": EDGE_MODULE, "aliases": ["edge_hist10", "hist10"]},
            "topology": {"id": TOPOLOGY_MODULE, "aliases": ["persistence", "ph"]},
            "node": {"id": "node/basic/v1", "aliases": ["basic"]},
        },
        "edge_module": EDGE_MODULE,
        "edge_feature_dim": len(EDGE_COLUMN_NAMES),
        "node_feature_dim": len(ncols),
        "topology_feature_dim": len(tcols),
    }


def _builder_summary(graphs: int, ncols: list[str], tcols: list[str]) -> dict[str, Any]:
    """``graph_builder_summary.json`` in the builder's shape (next to ``graphs/``, as the builder
    writes it next to ``graph_data/``), minus commands, paths and timings so it stays
    byte-reproducible."""
    stats = {"failures": 0, "processed": graphs, "success": graphs}
    return {
        "builder": {"id": "graphqa.embedded", "version": 1},
        "feature_dims": {
            "edge_feature_dim": len(EDGE_COLUMN_NAMES),
            "node_feature_dim": len(ncols),
            "topology_feature_dim": len(tcols),
        },
        "edge": {"module": EDGE_MODULE, **stats},
        "topology": {"module": TOPOLOGY_MODULE, **stats},
        "validation": {"enabled": True, "exit_code": 0},
    }


def _ground_truth(
    cfg: DatasetConfig,
    frame: pd.DataFrame,
    clean: np.ndarray,
    labels: np.ndarray,
    noise_sd: dict[str, float],
) -> dict[str, Any]:
    per_split = {}
    tuning = ["tuning"] if cfg.split.tuning > 0 else []  # absent: file as before tuning existed
    for name in ["train", "val", "val_calib", "test", *tuning]:
        mask = (frame["split"] == name).to_numpy()
        per_split[name] = {
            "graphs": int(mask.sum()),
            "targets": int(frame.loc[mask, "MODEL"].map(lambda m: m.split("_")[0]).nunique()),
            "best_achievable_spearman": round(_spearman(clean[mask], labels[mask]), 4),
        }
    return {
        "description": "Hidden recipe of the embedded dataset: label = dockq_from_score("
        "sum_k w_k z_k / ||w||) + N(0, label_noise_per_target[target]), clipped to [0, 1]; each "
        "signal group encodes only its own component z_k.",
        "signal_groups": {k: v for k, v in SIGNAL_WEIGHTS.items()},
        "noise_groups": NOISE_SLOTS,
        "neutral_groups": ["edge.distance"],
        "group_columns": {
            "basic": BASIC_COLUMNS,
            **{slot: [f"{slot}.{s}" for s in TOPOLOGY_COLUMN_SUFFIXES] for slot in TOPOLOGY_SLOTS},
            "edge.hist": EDGE_COLUMN_NAMES[1:],
            "edge.distance": EDGE_COLUMN_NAMES[:1],
            "structure": ["<number of nodes>"],
        },
        "label_noise": cfg.label_noise,
        "target_difficulty": cfg.target_difficulty,
        "label_noise_per_target": {t: round(v, 6) for t, v in noise_sd.items()},
        "best_achievable_spearman": round(_spearman(clean, labels), 4),
        "splits": per_split,
        "label_fractions": {
            "acceptable_or_better": round(float((labels >= 0.23).mean()), 4),
            "medium_or_better": round(float((labels >= 0.49).mean()), 4),
            "high": round(float((labels >= 0.80).mean()), 4),
        },
    }
