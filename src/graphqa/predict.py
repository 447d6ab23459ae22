"""Scoring graph folders with a shipped bundle, the per-target ranking report and the
``evaluate`` stage.

Graph folders are streamed from disk a batch at a time, so memory does not grow with the
number of graphs; every graph is validated against the bundle's schema before it is scored.
Every metric comes from :mod:`graphqa.metrics` (the definitions training uses); ``evaluate``
adds bootstrap intervals over test targets and the reference rankers of :mod:`graphqa.reference`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import Batch

from graphqa.contract import (
    DataContractError,
    list_graph_files,
    load_graph,
    target_of,
)
from graphqa.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HIT_THRESHOLDS,
    TOP_K,
    bootstrap_mean,
    bootstrap_pooled,
    hits_key,
    mae,
    mse,
    pearson,
    per_target_table,
    ranks_within_targets,
    resample_targets,
    spearman,
    target_members,
)
from graphqa.model import TopoQANet
from graphqa.schema import FeatureSchema, match_labels, read_labels, resolve_schema, validate_graph

if TYPE_CHECKING:  # runtime imports stay lazy: `graphqa predict` needs neither
    from graphqa.bundle import Bundle
    from graphqa.reference import TreesSettings

# --------------------------------------------------------------------------------------------
# Graph folders


def check_schema(expected: FeatureSchema, graph_dir: str | Path) -> FeatureSchema:
    """The folder's schema, or a refusal naming the dims/columns that differ."""
    found = resolve_schema(graph_dir)
    problems = expected.diff(found)
    if problems:
        raise DataContractError(
            graph_dir,
            "schema",
            "the feature schema the model was trained on",
            "; ".join(problems),
        )
    return found


@dataclass(frozen=True)
class GraphRef:
    key: str
    path: Path
    model: str
    target: str


def graph_refs(
    graph_dir: str | Path, labels_csv: str | Path | None = None
) -> tuple[list[GraphRef], dict[str, float]]:
    """Graphs to score: the labelled ones when a label CSV is given, else every graph."""
    files = list_graph_files(graph_dir)
    if labels_csv is None:
        refs = [GraphRef(k, p, Path(k).name, target_of(k)) for k, p in files.items()]
        return refs, {}
    records, missing = match_labels(
        read_labels(labels_csv, "predict"), files, labels_csv, "predict"
    )
    if missing:
        raise DataContractError(
            labels_csv,
            f"MODEL {missing[0]}",
            "a graph for every label",
            f"{len(missing)} labels without graphs",
        )
    refs = [GraphRef(r.key, files[r.key], r.model, r.target) for r in records]
    return refs, {r.model: r.dockq for r in records}


def read_batch(chunk: list[GraphRef], schema: FeatureSchema) -> Batch:
    """The chunk's graphs, each validated against the schema, as one PyG ``Batch``."""
    graphs = []
    for ref in chunk:
        data = load_graph(ref.path)
        validate_graph(data, ref.path, schema)
        graphs.append(
            data.__class__(x=data.x, edge_index=data.edge_index, edge_attr=data.edge_attr)
        )
    return Batch.from_data_list(graphs)


def stream_batches(
    refs: list[GraphRef], schema: FeatureSchema, batch_size: int = 64
) -> Iterator[tuple[list[GraphRef], Batch]]:
    """Validated graphs a batch at a time, reading each file once (in this process)."""
    for start in range(0, len(refs), batch_size):
        chunk = refs[start : start + batch_size]
        yield chunk, read_batch(chunk, schema)


@dataclass(frozen=True)
class NetInputs:
    """A batch as the network takes it, in plain arrays: crossing from a reader process this
    is one pickled copy, where torch tensors would each be shared through a file descriptor
    and a handshake (measured: ~1.5 ms per tensor, a third of the network's time)."""

    x: np.ndarray | Tensor
    edge_index: np.ndarray | Tensor
    edge_attr: np.ndarray | Tensor
    batch: np.ndarray | Tensor
    num_graphs: int

    @classmethod
    def of(cls, batch: Batch) -> NetInputs:
        return cls(
            batch.x.numpy(),
            batch.edge_index.numpy(),
            batch.edge_attr.numpy(),
            batch.batch.numpy(),
            int(batch.num_graphs),
        )

    def as_tensors(self) -> NetInputs:
        """The same inputs as torch tensors (sharing memory), for :func:`batch_logits`."""
        arrays = (self.x, self.edge_index, self.edge_attr, self.batch)
        return NetInputs(*(torch.from_numpy(a) for a in arrays), self.num_graphs)


@dataclass(frozen=True)
class ChunkReader(torch.utils.data.Dataset):
    """Item ``i``: chunk ``i`` of ``refs`` read and validated (:func:`read_batch`) as
    :class:`NetInputs`, plus its pooled features when ``pooled_schema`` is given.

    A data-contract refusal is returned as its fields rather than raised, so that a reader
    process hands the consumer the same one-line :class:`DataContractError` it would have
    raised in-process (a raised error would come back wrapped in a worker traceback).
    """

    refs: list[GraphRef]
    schema: FeatureSchema
    batch_size: int
    pooled_schema: FeatureSchema | None = None
    source: str = "graph folder"

    def __len__(self) -> int:
        return -(-len(self.refs) // self.batch_size)

    def chunk(self, index: int) -> list[GraphRef]:
        return self.refs[index * self.batch_size : (index + 1) * self.batch_size]

    def __getitem__(
        self, index: int
    ) -> tuple[NetInputs | None, np.ndarray | None, tuple[str, str, str, str | None] | None]:
        from graphqa.pooled import pooled_batch

        try:
            batch = read_batch(self.chunk(index), self.schema)
            features = (
                None
                if self.pooled_schema is None
                else pooled_batch(batch, self.pooled_schema, self.source)
            )
        except DataContractError as exc:
            return None, None, (exc.file, exc.key, exc.expected, exc.got)
        return NetInputs.of(batch), features, None


def _as_is(item: Any) -> Any:
    return item


def read_chunks(
    reader: ChunkReader, workers: int = 1
) -> Iterator[tuple[list[GraphRef], NetInputs, np.ndarray | None]]:
    """The reader's chunks in order as ``(refs, network inputs, pooled features)``.

    With ``workers`` > 0 the files are read by that many separate processes (a
    ``DataLoader``) while this one runs the network. Reading is torch's weights-only
    unpickler, pure Python: a thread would hold the same GIL the network's Python layers
    need, so only a process overlaps the two (benchmarks/predict_throughput.py). Order and
    values are those of the in-process path; a refusal is raised at the chunk it concerns.
    """
    if workers > 0 and len(reader) > 1:
        items: Iterator[Any] = iter(
            torch.utils.data.DataLoader(
                reader,
                batch_size=None,
                collate_fn=_as_is,
                num_workers=workers,
                prefetch_factor=4,
            )
        )
    else:
        items = (reader[i] for i in range(len(reader)))
    for index, (inputs, features, refusal) in enumerate(items):
        if refusal is not None:
            raise DataContractError(*refusal)
        yield reader.chunk(index), inputs, features


#: ``graphqa predict``'s batch size. Scores do not depend on it (tested); speed does: with
#: one reader process on 2 cores, batches of 32 scored a median 1,051 graphs/s over six
#: alternating runs, 48 1,032 and 64 923 (the network's per-edge intermediates stay in cache).
PREDICT_BATCH_SIZE = 32


def default_readers(cores: int | None = None) -> tuple[int, int]:
    """``(reader processes, network threads)`` for ``graphqa predict`` on ``cores`` cores.

    Reading a graph file (weights-only unpickling) and the network cost about the same per
    graph (≈ 0.75 ms each on one core here), and neither scales within one Python process,
    so the cores are split evenly between readers and the network. Oversubscribing does not
    pay: on 2 cores 1, 2 and 3 readers with 1 network thread scored a median 981, 918 and 825
    graphs/s. On one core, reading in-process (0 readers) avoids the hand-over altogether."""
    cores = cores or os.cpu_count() or 1
    if cores == 1:
        return 0, 1
    readers = cores // 2
    return readers, cores - readers


@torch.no_grad()
def batch_logits(net: Any, batch: Batch | NetInputs) -> Tensor:
    return net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs).double()


def stream_logits(
    net: TopoQANet, refs: list[GraphRef], schema: FeatureSchema, batch_size: int = 64
) -> Iterator[tuple[list[GraphRef], Tensor]]:
    """Validate and score graphs a batch at a time, reading each file once."""
    net = net.eval()
    for chunk, batch in stream_batches(refs, schema, batch_size):
        yield chunk, batch_logits(net, batch)


# --------------------------------------------------------------------------------------------
# Per-target ranking report


def ranking_report(
    frame: pd.DataFrame,
    score: str = "pred_calibrated",
    thresholds: tuple[float, ...] = HIT_THRESHOLDS,
    top_k: int = TOP_K,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-target table (:func:`graphqa.metrics.per_target_table`) and roll-ups: agreement
    over all models, means over targets of ranking loss, Spearman and top-k hit counts."""
    pred, true = frame[score].to_numpy(float), frame["dockq"].to_numpy(float)
    targets = per_target_table(pred, true, frame["TARGET"].to_numpy(), thresholds, top_k)
    rollup = {
        "n_targets": len(targets),
        "mse": mse(pred, true),
        "mae": mae(pred, true),
        "pearson": pearson(pred, true),
        "spearman_pooled": spearman(pred, true),
        "spearman_per_target_mean": float(targets["spearman"].mean()),  # NaN targets skipped
        "ranking_loss": float(targets["ranking_loss"].mean()),
    }
    for t in thresholds:
        rollup[hits_key(t)] = float(targets[hits_key(t)].mean())
    return targets, rollup


# --------------------------------------------------------------------------------------------
# Bundles


def calibrated(calibration: dict[str, Any], logits: np.ndarray) -> np.ndarray:
    """Apply the bundle's calibration policy to logits."""
    from scipy.special import expit

    from graphqa.calibrate import IsotonicCalibration, TemperatureScaling

    method = calibration["method"]
    if method == "temperature":
        return TemperatureScaling.from_dict(calibration["temperature"]).apply(logits)
    if method == "isotonic":
        return IsotonicCalibration.from_dict(calibration["isotonic"]).apply(expit(logits))
    return expit(logits)


def score_frame(
    keys: list[GraphRef],
    logits: np.ndarray,
    calibration: dict[str, Any],
    thresholds: dict[str, Any],
    labels: dict[str, float] | None = None,
    components: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per model: each component's score (``pred_gnn``, ``pred_trees``,
    ``pred_blend`` when the bundle has them), the shipped score raw and calibrated, interval,
    acceptable flag, rank. ``logits`` are the shipped score's."""
    from scipy.special import expit

    from graphqa.calibrate import ConformalInterval

    cal = calibrated(calibration, logits)
    targets = np.array([k.target for k in keys], dtype=object)
    low, high = (
        ConformalInterval.from_dict(calibration["conformal"]).bounds(cal, targets)
        if len(keys)
        else (cal, cal)
    )
    frame = pd.DataFrame(
        {
            "TARGET": [k.target for k in keys],
            "MODEL": [k.model for k in keys],
            **{f"pred_{name}": score for name, score in (components or {}).items()},
            "pred_raw": expit(logits),
            "pred_calibrated": cal,
            "interval_low": low,
            "interval_high": high,
            "acceptable": cal >= float(thresholds["threshold"]),
            "rank_in_target": ranks_within_targets(cal, targets),
        }
    )
    if labels:
        frame["dockq"] = [labels[m] for m in frame["MODEL"]]
    return frame


@dataclass
class Scored:
    """A scored graph folder: the per-model frame, the run report, pooled features (optional)."""

    frame: pd.DataFrame
    report: dict[str, Any]
    pooled: np.ndarray | None = None


def score_folder(
    bundle: Bundle,
    graph_dir: str | Path,
    labels_csv: str | Path | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    pooled: bool = False,
    compile: bool = False,
    workers: int = 1,
) -> Scored:
    """Score a graph folder with a loaded bundle in one pass over the files: every component
    the bundle carries and the shipped score; with ``pooled`` also the pooled features of every
    graph (for the reference trees of ``evaluate``). ``compile`` runs the network through
    ``torch.compile`` (same scores up to float32 rounding; pays off on large folders only);
    ``workers`` reader processes read the files while the network runs (0: read in-process;
    scores are the same either way)."""
    from scipy.special import expit

    from graphqa.calibrate import ConformalInterval

    schema = check_schema(bundle.schema, graph_dir)
    refs, labels = graph_refs(graph_dir, labels_csv)
    net = bundle.net.eval()
    start = time.perf_counter()
    keys: list[GraphRef] = []
    logits: list[np.ndarray] = []
    features: list[np.ndarray] = []
    with_trees = bundle.trees is not None
    if compile:
        from graphqa.module import compiled

        net = compiled(net)
    reader = ChunkReader(
        refs, schema, batch_size, bundle.schema if pooled or with_trees else None, str(graph_dir)
    )
    for chunk, inputs, chunk_features in read_chunks(reader, workers):
        keys += chunk
        logits.append(batch_logits(net, inputs.as_tensors()).numpy())
        if chunk_features is not None:
            features.append(chunk_features)
    all_logits = np.concatenate(logits) if logits else np.zeros(0)
    stacked = np.concatenate(features) if features else None
    if with_trees:
        trees_pred = bundle.trees.predict(stacked) if len(keys) else np.zeros(0)
        components = bundle.scorer.components(all_logits, trees_pred)
        shipped = bundle.scorer.shipped_logits(all_logits, trees_pred)
    else:
        components, shipped = {"gnn": expit(all_logits)}, all_logits
    seconds = time.perf_counter() - start
    frame = score_frame(
        keys, shipped, bundle.calibration, bundle.thresholds, labels, components=components
    )
    interval = ConformalInterval.from_dict(bundle.calibration["conformal"])
    report: dict[str, Any] = {
        "graphs": len(frame),
        "shipped": bundle.scorer.family,
        "interval": interval.to_dict(),
        "seconds": round(seconds, 3),
        "graphs_per_s": round(len(frame) / seconds, 1) if seconds > 0 else None,
    }
    if labels:
        per_target, rollup = ranking_report(frame)
        report["metrics"] = rollup
        report["per_target"] = per_target
    return Scored(frame=frame, report=report, pooled=stacked)


def predict_with_bundle(
    bundle_dir: str | Path,
    graph_dir: str | Path,
    labels_csv: str | Path | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    compile: bool = False,
    workers: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a graph folder with a verified bundle; metrics too when labels are given."""
    from graphqa.bundle import load_bundle

    scored = score_folder(
        load_bundle(bundle_dir), graph_dir, labels_csv, batch_size, compile=compile, workers=workers
    )
    return scored.frame, scored.report


# --------------------------------------------------------------------------------------------
# The evaluate stage

#: Metric-name prefix of each ranker in metrics.json: the shipped score keeps the ``test_``
#: names; each family the bundle carries and the random pick are references beside it.
RANKER_PREFIX = {
    "shipped": "test",
    "gnn": "ref_gnn",
    "trees": "ref_trees",
    "blend": "ref_blend",
    "random": "ref_random",
}


def ranker_summary(
    ranker: str,
    table: pd.DataFrame,
    resamples: np.ndarray,
    pred: np.ndarray | None = None,
    true: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    level: float = BOOTSTRAP_LEVEL,
) -> list[dict[str, Any]]:
    """Headline numbers of one ranker with percentile intervals over resampled targets:
    means over targets of ranking loss, per-target Spearman and hit counts, and (given
    per-model predictions) pooled Spearman with whole targets resampled."""
    rows = []
    per_target = ["ranking_loss", "spearman"] + [c for c in table.columns if c.startswith("hits_")]
    for column in per_target:
        values = table[column].to_numpy(float)
        low, high = bootstrap_mean(values, resamples, level)
        name = "spearman_per_target_mean" if column == "spearman" else column
        value = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        rows.append(
            {"ranker": ranker, "metric": name, "value": value, "ci_low": low, "ci_high": high}
        )
    if pred is not None and true is not None and groups is not None:
        low, high = bootstrap_pooled(spearman, pred, true, groups, resamples, level)
        rows.append(
            {
                "ranker": ranker,
                "metric": "spearman_pooled",
                "value": spearman(pred, true),
                "ci_low": low,
                "ci_high": high,
            }
        )
        for name, fn in (("mse", mse), ("mae", mae), ("pearson", pearson)):
            rows.append({"ranker": ranker, "metric": name, "value": fn(pred, true)})
    return rows


def paired_difference(
    name: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    column: str,
    resamples: np.ndarray,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, Any]:
    """Mean over targets of ``a - b`` for one per-target column, resampling targets jointly
    (negative ranking-loss difference: ``a`` picks better models than ``b``)."""
    diff = a[column].to_numpy(float) - b[column].to_numpy(float)
    low, high = bootstrap_mean(diff, resamples, level)
    return {
        "ranker": name,
        "metric": column,
        "value": float(np.nanmean(diff)),
        "ci_low": low,
        "ci_high": high,
    }


def _finite_or_none(value: Any) -> Any:
    """JSON-safe headline value: strings and ints as they are, floats rounded, NaN -> null."""
    if isinstance(value, str | int | np.integer) or value is None:
        return value if not isinstance(value, np.integer) else int(value)
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def headline_metrics(summary: pd.DataFrame) -> dict[str, Any]:
    """The metrics.json subset of the summary table (what ``dvc exp show`` lists)."""
    wanted = {
        "shipped": (
            "ranking_loss",
            "spearman_pooled",
            "spearman_per_target_mean",
            *(hits_key(t) for t in HIT_THRESHOLDS),
        ),
        "gnn": ("ranking_loss", "spearman_pooled"),
        "trees": ("ranking_loss", "spearman_pooled"),
        "blend": ("ranking_loss", "spearman_pooled"),
        "random": ("ranking_loss",),
        "shipped_minus_gnn": ("ranking_loss",),
        "shipped_minus_trees": ("ranking_loss",),
    }
    prefix = {**RANKER_PREFIX, **{k: k for k in wanted if k.startswith("shipped_minus")}}
    out: dict[str, Any] = {}
    for row in summary.to_dict("records"):
        if row["metric"] in wanted.get(row["ranker"], ()):
            key = f"{prefix[row['ranker']]}_{row['metric']}"
            out[key] = row["value"]
            out[f"{key}_ci_low"] = row["ci_low"]
            out[f"{key}_ci_high"] = row["ci_high"]
        elif row["ranker"] == "shipped" and row["metric"] in ("mse", "mae", "pearson"):
            out[f"test_{row['metric']}"] = row["value"]
    return out


def wide_per_target(tables: dict[str, pd.DataFrame], interval_coverage: np.ndarray) -> pd.DataFrame:
    """One row per target: the shipped score's columns as they are, each reference ranker's
    beside them with its name as prefix (``trees_ranking_loss``, ``random_hits_023``...), so a
    chart or ``dvc plots`` can overlay the rankers target by target; plus the shipped interval's
    coverage of the target's models."""
    gnn = tables["shipped"]
    shared = ["TARGET", "n_models", "best_dockq"]
    wide = gnn.assign(interval_coverage=interval_coverage)
    for name, table in tables.items():
        if name == "shipped":
            continue
        if not table["TARGET"].equals(gnn["TARGET"]):
            raise ValueError(f"per-target tables of shipped and {name} list different targets")
        own = table.drop(columns=shared)
        wide = pd.concat([wide, own.add_prefix(f"{name}_")], axis=1)
    return wide


def evaluate_bundle(
    *,
    bundle_dir: str | Path,
    graph_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    schema_dir: str | Path,
    batch_size: int = 64,
    bins: int = 10,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    trees: TreesSettings | None = None,
) -> dict[str, Any]:
    """Stage ``evaluate``: the bundle on the test split through the same predict code, with
    bootstrap intervals over test targets and, beside the shipped score, every family the
    bundle carries (GNN, trees, blend) and the random pick.

    Writes ``metrics.json`` (headline numbers and intervals), ``summary.csv`` (every metric of
    every ranker with its interval), ``per_target.csv`` (one row per target, all rankers),
    ``predictions.csv``, ``interval_coverage.csv`` (all models and per DockQ band) and
    ``reliability.csv``. ``per_target.csv`` holds one row per target: the GNN's columns, then
    ``gnn_*``, ``trees_*``, ``blend_*`` and ``random_*`` for the references. A bundle without
    trees (GNN only) gets scikit-learn reference trees fitted on
    ``<schema_dir>/packed/{train,val}.pt`` instead, and no blend.
    """
    from graphqa.bundle import load_bundle
    from graphqa.calibrate import ConformalInterval, coverage_by_band
    from graphqa.contract import write_json
    from graphqa.data import PackedSplit
    from graphqa.metrics import expected_calibration_error, reliability_curve
    from graphqa.reference import TreesSettings, fit_trees_on_packed, random_pick_table

    bundle = load_bundle(bundle_dir)
    scored = score_folder(bundle, graph_dir, labels_csv, batch_size, pooled=True)
    frame, report = scored.frame, scored.report
    reference_iters = None
    if bundle.trees is None:
        packed = Path(schema_dir) / "packed"
        train, val = PackedSplit.load(packed / "train.pt"), PackedSplit.load(packed / "val.pt")
        reference = fit_trees_on_packed(train, val, bundle.schema, trees or TreesSettings())
        frame["pred_trees"] = reference.predict(scored.pooled)
        reference_iters = reference.n_iter

    true = frame["dockq"].to_numpy(float)
    groups = frame["TARGET"].to_numpy()
    raw, cal = frame["pred_raw"].to_numpy(float), frame["pred_calibrated"].to_numpy(float)
    preds = {
        name: frame[f"pred_{name}"].to_numpy(float)
        for name in ("gnn", "trees", "blend")
        if f"pred_{name}" in frame
    }
    tables = {"shipped": report["per_target"]}
    tables |= {name: per_target_table(pred, true, groups) for name, pred in preds.items()}
    tables["random"] = random_pick_table(true, groups)
    resamples = resample_targets(len(tables["shipped"]), n_resamples, seed)
    rows = ranker_summary("shipped", tables["shipped"], resamples, cal, true, groups)
    for name, pred in preds.items():
        rows += ranker_summary(name, tables[name], resamples, pred, true, groups)
    rows += ranker_summary("random", tables["random"], resamples)
    for ref in [*preds, "random"]:
        rows.append(
            paired_difference(
                f"shipped_minus_{ref}", tables["shipped"], tables[ref], "ranking_loss", resamples
            )
        )
    summary = pd.DataFrame(rows, columns=["ranker", "metric", "value", "ci_low", "ci_high"])

    interval = ConformalInterval.from_dict(bundle.calibration["conformal"])
    bands = coverage_by_band(cal, true, interval.half_widths(cal, groups), groups)
    covered = (true >= frame["interval_low"].to_numpy()) & (
        true <= frame["interval_high"].to_numpy()
    )
    per_target_cover = np.array([covered[rows].mean() for rows in target_members(groups)[1]])
    cover_low, cover_high = bootstrap_mean(per_target_cover, resamples)

    metrics: dict[str, Any] = {
        "shipped_family": bundle.scorer.family,
        "test_n_targets": len(tables["shipped"]),
        "test_n_models": len(frame),
        **headline_metrics(summary),
        "test_ece_raw": expected_calibration_error(raw, true, bins),
        "test_ece_calibrated": expected_calibration_error(cal, true, bins),
        "test_interval_coverage": bands[0]["coverage"],
        "test_interval_coverage_target_mean": bands[0]["coverage_target_mean"],
        "test_interval_coverage_target_mean_ci_low": cover_low,
        "test_interval_coverage_target_mean_ci_high": cover_high,
        "test_interval_width": bands[0]["mean_width"],
        "interval_guarantee": interval.guarantee(),
    }
    if reference_iters is not None:  # only the fallback reference trees are fitted here
        metrics["ref_trees_n_iter"] = reference_iters
    metrics = {k: _finite_or_none(v) for k, v in metrics.items()}
    per_target = wide_per_target(tables, per_target_cover)
    reliability = [{"calibration": "raw", **r} for r in reliability_curve(raw, true, bins)]
    reliability += [{"calibration": "calibrated", **r} for r in reliability_curve(cal, true, bins)]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = {"index": False, "float_format": "%.6f"}
    frame.to_csv(out_dir / "predictions.csv", **csv)
    per_target.to_csv(out_dir / "per_target.csv", **csv)
    summary.to_csv(out_dir / "summary.csv", **csv)
    pd.DataFrame([{"split": "test", **row} for row in bands]).to_csv(
        out_dir / "interval_coverage.csv", **csv
    )
    pd.DataFrame(reliability).to_csv(out_dir / "reliability.csv", **csv)
    write_json(out_dir / "metrics.json", metrics)
    print(
        f"evaluate: {len(frame)} test graphs, {metrics['test_n_targets']} targets at "
        f"{report['graphs_per_s']} graphs/s; shipped {bundle.scorer.family}: ranking loss "
        f"{metrics['test_ranking_loss']} "
        f"[{metrics['test_ranking_loss_ci_low']}, {metrics['test_ranking_loss_ci_high']}] vs "
        f"gnn {metrics['ref_gnn_ranking_loss']}, trees {metrics['ref_trees_ranking_loss']}, "
        f"blend {metrics.get('ref_blend_ranking_loss')}, "
        f"random {metrics['ref_random_ranking_loss']}; "
        f"interval coverage {metrics['test_interval_coverage_target_mean']} "
        f"({interval.guarantee()})"
    )
    return metrics
