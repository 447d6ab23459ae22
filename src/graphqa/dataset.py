"""Deterministic embedded default dataset, written in exactly the graph-builder contract.

Each decoy has a hidden quality made of independent components, one per *signal* feature group
(basic residue columns, some topology slots, the edge distance histogram, interface size). Every
signal group encodes only its own component, so each is needed to predict the label and FLT can
be checked against the truth. The other topology slots vary per graph but carry no signal.
Columns come on very different scales (one-hots, degrees, raw counts, Å), as real builders emit,
so the pipeline's train-only standardisation is exercised by the default run.

Three options move it toward real protein-decoy sets (``label_shape: unimodal``,
``count_columns: 0`` and ``train_models_cap: null`` reproduce the original generator byte for
byte, so old datasets and the tests built on them stay valid):

* ``label_shape: bimodal``: labels pile up near 0 (most decoys incorrect) with a second mode
  above 0.8 and few in between; targets whose decoys are all poor have no good model at all.
* ``count_columns``: heavy-tailed count node columns (rare close contacts: mostly 0, now and then
  huge) whose per-graph *sums* carry their own planted component while the per-node *means*
  carry little (bigger graphs dilute them), so sum/log pooling matters.
* ``train_models_cap``: a small train split (a few hundred graphs), by whole targets.

New randomness comes from generators of its own (:func:`_extra_rng`), never from the main
stream, so every original column, split and noise draw is unchanged by the options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, ndtr, ndtri
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
    save_graph,
)
from graphqa.files import atomic_dir, write_json
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
#: Planted group of the heavy-tailed count columns (present only with count_columns > 0).
COUNT_GROUP = "counts"
COUNT_WEIGHT = 0.8
#: Per count column: expected per-graph total at component 0 cycles through these (raw scales
#: differ, as real count columns do); the total grows by exp(_COUNT_BETA * z) with the component.
_COUNT_TOTALS = (8.0, 30.0, 120.0)
_COUNT_BETA = 0.35
_COUNT_NUISANCE = 0.2  # per-graph, per-column log-sd of the total that no feature explains
_COUNT_CONCENTRATION = 0.1  # Dirichlet share of each node: mostly 0, now and then huge
#: Bimodal labels: fraction of decoys below DockQ 0.1 and above 0.8 for an N(0, 1) score.
BIMODAL_LOW_FRACTION = 0.62
BIMODAL_HIGH_FRACTION = 0.22
_BIMODAL_FLOOR, _BIMODAL_CEIL = 0.01, 0.98  # DockQ is rarely exactly 0 or 1
#: Bimodal label noise is added to the score (before the steep map) so the two modes survive;
#: this many score units per DockQ unit of label_noise keeps the oracle Spearman comparable.
_BIMODAL_NOISE_SCALE = 5.0
_TARGET_SHARE = 0.6  # fraction of each component's std shared by all decoys of a target
_NODE_NOISE = 0.6  # per-node noise (in component units) of topology columns


def topology_columns() -> list[str]:
    """Names of the topology node columns, ``<slot>.h<dim>.<statistic>``, in file order.

    Returns:
        One name per topology slot, homology dimension and statistic.
    """
    return [f"{slot}.{suffix}" for slot in TOPOLOGY_SLOTS for suffix in TOPOLOGY_COLUMN_SUFFIXES]


def count_columns(n: int) -> list[str]:
    """Names of the ``n`` count node columns (between the basic and the topology columns)."""
    return [f"rare_contacts_{i}" for i in range(n)]


def node_columns(n_counts: int = 0) -> list[str]:
    """Names of all node columns in file order: basic, then count, then topology columns.

    Args:
        n_counts: how many count columns (``dataset.count_columns``).

    Returns:
        The column names.
    """
    return BASIC_COLUMNS + count_columns(n_counts) + topology_columns()


def dockq_from_score(z: np.ndarray) -> np.ndarray:
    """Monotone map of a N(0,1) quality score to a DockQ-like value, mostly low.

    Quantile ranges: 62% incorrect (<0.23), 20% acceptable, 12% medium, 6% high (>=0.80).
    """
    u = ndtr(z)
    knots_u = [0.0, 0.62, 0.82, 0.94, 1.0]
    knots_q = [0.0, 0.23, 0.49, 0.80, 0.98]
    low = 0.23 * np.power(np.clip(u / 0.62, 0, 1), 1.8)
    return np.where(u < 0.62, low, np.interp(u, knots_u, knots_q))


def _bimodal_map() -> tuple[float, float]:
    """Slope k and centre c of the logistic so an N(0, 1) score lands BIMODAL_LOW_FRACTION
    below DockQ 0.1 and BIMODAL_HIGH_FRACTION above 0.8 (closed form from two quantiles)."""

    def logit_at(q: float) -> float:
        p = (q - _BIMODAL_FLOOR) / (_BIMODAL_CEIL - _BIMODAL_FLOOR)
        return math.log(p / (1 - p))

    z_low, z_high = float(ndtri(BIMODAL_LOW_FRACTION)), float(ndtri(1 - BIMODAL_HIGH_FRACTION))
    k = (logit_at(0.8) - logit_at(0.1)) / (z_high - z_low)
    return k, z_low - logit_at(0.1) / k


def dockq_bimodal(z: np.ndarray) -> np.ndarray:
    """Monotone, steep map of an N(0, 1) score to a two-peaked DockQ-like value in [0.01, 0.98].

    62% of N(0, 1) scores fall below 0.1, 22% above 0.8 and 16% in between.
    """
    k, c = _bimodal_map()
    return _BIMODAL_FLOOR + (_BIMODAL_CEIL - _BIMODAL_FLOOR) * expit(k * (np.asarray(z) - c))


def capri_class(dockq: float) -> str:
    """The CAPRI class a DockQ value falls in, for the label CSVs' ``capri`` column.

    Args:
        dockq: a DockQ value in [0, 1].

    Returns:
        ``High`` (>= 0.80), ``Medium`` (>= 0.49), ``Acceptable`` (>= 0.23) or ``Incorrect``.
    """
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


def _count_block(count_rng: np.random.Generator, n: int, k: int, level: float) -> np.ndarray:
    """``k`` heavy-tailed count columns for ``n`` nodes carrying the component ``level``.

    Each column's per-graph total is Poisson with a mean set by the component (plus nuisance)
    that does not grow with the graph, so the sum over nodes carries the signal while the mean
    (total / n) is diluted by the graph size, which runs the other way (bigger graphs are a
    little better). The total is shared out by Dirichlet weights of small concentration, so a
    node's count is mostly 0 and now and then huge, as clash or rare distance-bin counts are.
    Totals rise with quality (close inter-chain contacts): a count falling with quality could
    not have an informative sum and an uninformative mean here, as graph size rises with it.
    """
    cols = []
    for j in range(k):
        mean_total = _COUNT_TOTALS[j % len(_COUNT_TOTALS)] * math.exp(
            _COUNT_BETA * level + _COUNT_NUISANCE * float(count_rng.standard_normal())
        )
        share = count_rng.gamma(_COUNT_CONCENTRATION, size=n)
        share = share / share.sum() if share.sum() > 0 else np.full(n, 1.0 / n)
        cols.append(count_rng.multinomial(count_rng.poisson(mean_total), share).astype(np.float64))
    return np.stack(cols, axis=1)


def _make_graph(
    decoy: _Decoy,
    cfg: DatasetConfig,
    rng: np.random.Generator,
    counts: tuple[np.random.Generator, float] | None = None,
) -> Data:
    """One decoy's graph; ``counts`` (generator, component) adds the count columns, drawn
    after (and apart from) the main stream so every other column is as without them."""
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
    basic = [rasa[:, None], phi[:, None], psi[:, None], ss8, aa]

    dist = np.linalg.norm(pos[edge_index[0]] - pos[edge_index[1]], axis=1)
    bins = np.arange(EDGE_HIST_BINS) + 0.5
    # Atom-pair distance counts: closer residues and better interfaces pack more short contacts.
    lam = 12.0 * np.exp(-0.5 * ((bins[None, :] - 0.6 * dist[:, None]) / 2.0) ** 2)
    lam = lam * np.exp(0.35 * c["edge.hist"] * (bins[None, :] < 5.0))
    hist = rng.poisson(lam).astype(np.float64)
    edge_attr = np.concatenate([dist[:, None], hist], axis=1)
    extra = [] if counts is None else [_count_block(counts[0], n, cfg.count_columns, counts[1])]
    x = np.concatenate([*basic, *extra, *slots], axis=1)

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


def _extra_rng(cfg: DatasetConfig, stream: int) -> np.random.Generator:
    """A generator of its own for an option's randomness (seeded by ``seed``), so the main
    stream -- every original column, split and noise draw -- is the same with or without it."""
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(stream,)))


def _count_components(decoys: list[_Decoy], rng: np.random.Generator) -> np.ndarray:
    """The count group's component per decoy: a target share plus a decoy part, as the others."""
    share, own = math.sqrt(_TARGET_SHARE), math.sqrt(1 - _TARGET_SHARE)
    target_part: dict[str, float] = {}
    comps = []
    for d in decoys:
        if d.target not in target_part:
            target_part[d.target] = float(rng.standard_normal())
        comps.append(share * target_part[d.target] + own * float(rng.standard_normal()))
    return np.array(comps)


def _capped_out_targets(split_of_target: dict[str, str], cfg: DatasetConfig) -> set[str]:
    """Train targets left out by ``train_models_cap``: whole targets, the last in name order
    (names are assigned before the random split, so the kept ones are a random sample)."""
    if cfg.train_models_cap is None:
        return set()
    train = sorted(t for t, split in split_of_target.items() if split == "train")
    return set(train[cfg.train_models_cap // cfg.models_per_target :])


@dataclass
class _Plan:
    """Everything decided before the graphs are drawn; ``rng``/``count_rng`` are positioned
    where the graph draws continue."""

    decoys: list[_Decoy]
    count_comps: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    noise_sd: dict[str, float]
    split_of_target: dict[str, str]
    capped_out: set[str]
    kept: np.ndarray
    rng: np.random.Generator
    count_rng: np.random.Generator | None


def _plan(cfg: DatasetConfig) -> _Plan:
    """Latent scores, labels, splits and the cap: the cheap part of the generator."""
    rng = np.random.default_rng(cfg.seed)
    decoys = _latent_scores(cfg, rng)
    scores = np.array([d.score for d in decoys])
    count_rng = _extra_rng(cfg, 1) if cfg.count_columns else None
    count_comps = np.zeros(len(decoys))
    if count_rng is not None:
        # the count component joins the score with its weight; the score stays N(0, 1)
        norm = math.sqrt(sum(w * w for w in SIGNAL_WEIGHTS.values()))
        count_comps = _count_components(decoys, count_rng)
        scores = (norm * scores + COUNT_WEIGHT * count_comps) / math.hypot(norm, COUNT_WEIGHT)
    noise_sd = _label_noise_per_target(cfg, rng)
    per_decoy_sd = np.array([noise_sd[d.target] for d in decoys])
    eps = rng.standard_normal(len(decoys))
    if cfg.label_shape == "unimodal":
        clean = dockq_from_score(scores)
        labels = np.clip(clean + per_decoy_sd * eps, 0.0, 1.0)
    else:
        # noise in score units, before the steep map, so both modes survive; the score is
        # rescaled by its nominal total sd so the mode fractions hold at any label_noise
        scale = math.hypot(1.0, _BIMODAL_NOISE_SCALE * cfg.label_noise)
        clean = dockq_bimodal(scores / scale)
        labels = dockq_bimodal((scores + _BIMODAL_NOISE_SCALE * per_decoy_sd * eps) / scale)
    labels = np.round(labels, 6)
    split_of_target = {
        t: name
        for name, ts in _split_targets(sorted({d.target for d in decoys}), cfg, rng).items()
        for t in ts
    }
    capped_out = _capped_out_targets(split_of_target, cfg)
    return _Plan(
        decoys=decoys,
        count_comps=count_comps,
        clean=clean,
        labels=labels,
        noise_sd=noise_sd,
        split_of_target=split_of_target,
        capped_out=capped_out,
        kept=np.array([d.target not in capped_out for d in decoys]),
        rng=rng,
        count_rng=count_rng,
    )


def label_frame(cfg: DatasetConfig) -> pd.DataFrame:
    """The label rows the generator writes (MODEL, dockq, capri, split), without drawing a
    single graph: seconds even at full size, for tests and quick looks at the label shape."""
    plan = _plan(cfg)
    return _frame(plan)


def _frame(plan: _Plan) -> pd.DataFrame:
    labels = plan.labels
    return pd.DataFrame(
        {
            "MODEL": [d.model for d in plan.decoys],
            "dockq": labels,
            "capri": [capri_class(v) for v in labels],
            "split": [plan.split_of_target[d.target] for d in plan.decoys],
        }
    )[plan.kept]


def dataset_stage(*, cfg: DatasetConfig, out_dir: str | Path) -> dict[str, Any]:
    """Stage worker for ``dataset``: generate the embedded synthetic dataset as a graph
    builder would lay it out, so every later stage runs as on real builder output.

    Reads nothing (everything follows from ``cfg``). Writes ``out_dir``, swapped in atomically:
    ``graphs/<TARGET>/<MODEL>.pt`` (train graphs of targets cut by ``train_models_cap`` are
    left out), ``graphs/{graph_metadata.json, node_columns.json, edge_columns.json,
    topology_columns.json, graph_manifest.json}``, ``graph_builder_summary.json``,
    ``labels/{train,val,val_calib,test,tuning}.csv`` (``tuning.csv`` header-only without
    tuning targets) and ``ground_truth.json`` (the hidden label recipe).

    Args:
        cfg: the ``dataset:`` params section.
        out_dir: the stage's output folder.

    Returns:
        The content of ``ground_truth.json``.
    """
    plan = _plan(cfg)
    decoys, rng, count_rng, kept = plan.decoys, plan.rng, plan.count_rng, plan.kept
    clean, labels, noise_sd = plan.clean, plan.labels, plan.noise_sd

    ncols, tcols = node_columns(cfg.count_columns), topology_columns()
    entries: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        graph_dir = tmp / "graphs"
        for decoy, comp, keep in zip(decoys, plan.count_comps, kept, strict=True):
            counts = None if count_rng is None else (count_rng, float(comp))
            # capped-out graphs are still drawn: the stream, hence every kept graph, is as
            # without the cap
            data = _make_graph(decoy, cfg, rng, counts)
            if not keep:
                continue
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
        write_json(tmp / BUILDER_SUMMARY, _builder_summary(int(kept.sum()), ncols, tcols))

        frame = _frame(plan)
        (tmp / "labels").mkdir()
        # tuning.csv always exists (header-only without tuning targets): params.yaml can
        # point paths.tuning_labels at it and DVC can track it as a dependency.
        for name in ("train", "val", "val_calib", "test", "tuning"):
            part = frame[frame["split"] == name].drop(columns="split")
            part.to_csv(tmp / "labels" / f"{name}.csv", index=False, float_format="%.6f")

        truth = _ground_truth(cfg, frame, clean[kept], labels[kept], noise_sd)
        if _departs_from_original(cfg):
            truth = _ground_truth_extras(
                truth, cfg, frame, clean[kept], labels[kept], plan.capped_out
            )
        write_json(tmp / "ground_truth.json", truth)
    return truth


#: Options at these values reproduce the original generator; they are left out of the files
#: then, so an original dataset stays byte-identical.
_ORIGINAL_OPTIONS: dict[str, Any] = {
    "label_shape": "unimodal",
    "count_columns": 0,
    "train_models_cap": None,
}


def _departs_from_original(cfg: DatasetConfig) -> bool:
    return any(getattr(cfg, k) != v for k, v in _ORIGINAL_OPTIONS.items())


def _builder_params(cfg: DatasetConfig) -> dict[str, Any]:
    """The generator's params as recorded in graph_metadata.json: all of them, except the
    options when every one is at its original value (the file is then as it always was)."""
    params = cfg.model_dump(mode="json")
    if _departs_from_original(cfg):
        return params
    return {k: v for k, v in params.items() if k not in _ORIGINAL_OPTIONS}


def _ground_truth_extras(
    truth: dict[str, Any],
    cfg: DatasetConfig,
    frame: pd.DataFrame,
    clean: np.ndarray,
    labels: np.ndarray,
    capped_out: set[str],
) -> dict[str, Any]:
    """The options' bookkeeping: the count group as a planted signal group (weight and
    columns, as the others), the label shape with its mode fractions, and the cap."""
    truth = {**truth, "label_shape": cfg.label_shape}
    if cfg.label_shape == "bimodal":
        k, c = _bimodal_map()
        truth["description"] = (
            "Hidden recipe of the embedded dataset: label = dockq_bimodal((s + "
            f"{_BIMODAL_NOISE_SCALE} * N(0, label_noise_per_target[target])) / "
            f"sqrt(1 + ({_BIMODAL_NOISE_SCALE} * label_noise)^2)) with s = sum_k w_k z_k / "
            f"||w|| and dockq_bimodal(z) = {_BIMODAL_FLOOR} + "
            f"{round(_BIMODAL_CEIL - _BIMODAL_FLOOR, 6)} * sigmoid({k:.4f} * (z - {c:.4f})); "
            "each signal group encodes only its own component z_k."
        )
    if cfg.count_columns:
        truth["signal_groups"] = {**truth["signal_groups"], COUNT_GROUP: COUNT_WEIGHT}
        truth["group_columns"] = {
            **truth["group_columns"],
            COUNT_GROUP: count_columns(cfg.count_columns),
        }
        truth["count_columns"] = {
            "columns": count_columns(cfg.count_columns),
            "signal_in": "per-graph sum (the per-node mean is diluted by the graph size)",
            "totals_at_zero": [
                _COUNT_TOTALS[j % len(_COUNT_TOTALS)] for j in range(cfg.count_columns)
            ],
            "log_total_per_unit_component": _COUNT_BETA,
        }
    targets = frame["MODEL"].map(lambda m: m.split("_")[0]).to_numpy()
    per_target = []
    no_good = 0
    for t in sorted(set(targets)):
        mask = targets == t
        no_good += int(not (labels[mask] > 0.8).any())
        if np.ptp(labels[mask]) > 0 and np.ptp(clean[mask]) > 0:
            per_target.append(_spearman(clean[mask], labels[mask]))
    truth["best_achievable_target_spearman"] = {
        "mean": round(float(np.mean(per_target)), 4),
        "min": round(float(np.min(per_target)), 4),
    }
    truth["label_fractions"] = {
        **truth["label_fractions"],
        "below_0.1": round(float((labels < 0.1).mean()), 4),
        "between_0.1_and_0.8": round(float(((labels >= 0.1) & (labels <= 0.8)).mean()), 4),
        "above_0.8": round(float((labels > 0.8).mean()), 4),
        "targets_without_model_above_0.8": no_good,
    }
    if cfg.train_models_cap is not None:
        truth["train_models_cap"] = cfg.train_models_cap
        truth["capped_out_train_targets"] = sorted(capped_out)
    return truth


def _graph_metadata(
    entries: dict[str, Any], cfg: DatasetConfig, ncols: list[str], tcols: list[str]
) -> dict[str, Any]:
    return {
        **entries,
        "_builder": {
            "name": "graphqa.embedded",
            "version": 1,
            "params": _builder_params(cfg),
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
