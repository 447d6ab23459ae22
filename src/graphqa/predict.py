"""``graphqa predict``: scoring graph folders with a shipped bundle, and the per-target report.

Graph folders are streamed from disk a batch at a time, so memory does not grow with the
number of graphs; every graph is validated against the bundle's schema before it is scored.
Every metric comes from :mod:`graphqa.maths.metrics` (the definitions training uses). The
``evaluate`` stage (:mod:`graphqa.evaluate`) scores the test split through this same code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from torch import Tensor
from torch_geometric.data import Batch

from graphqa.bundle import Bundle, load_bundle
from graphqa.contract import (
    DataContractError,
    list_graph_files,
    load_graph,
    target_of,
)
from graphqa.maths.calibration import ConformalInterval, IsotonicCalibration, TemperatureScaling
from graphqa.maths.metrics import (
    HIT_THRESHOLDS,
    TOP_K,
    hits_key,
    mae,
    mse,
    pearson,
    per_target_table,
    ranks_within_targets,
    spearman,
)
from graphqa.model import TopoQANet
from graphqa.module import compiled
from graphqa.pooled import pooled_batch
from graphqa.schema import FeatureSchema, match_labels, read_labels, resolve_schema, validate_graph
from graphqa.scorer import shipped_scores

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
    """One graph file to score, with the names its prediction row carries.

    Attributes:
        key: ``<TARGET>/<MODEL>`` relative to the graph folder, no suffix.
        path: the ``.pt`` file.
        model: the model (decoy) name.
        target: the target name.
    """

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
    """The network's logits for one batch, without gradients, as float64.

    Args:
        net: the network (or its ``torch.compile`` wrapper).
        batch: a PyG batch, or a reader process's :class:`NetInputs` as tensors.

    Returns:
        One logit per graph.
    """
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
    """Per-target table (:func:`graphqa.maths.metrics.per_target_table`) and roll-ups: agreement
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
    schema = check_schema(bundle.schema, graph_dir)
    refs, labels = graph_refs(graph_dir, labels_csv)
    net = bundle.net.eval()
    start = time.perf_counter()
    keys: list[GraphRef] = []
    logits: list[np.ndarray] = []
    features: list[np.ndarray] = []
    with_trees = bundle.trees is not None
    if compile:
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
    trees_pred = None
    if bundle.trees is not None:
        trees_pred = bundle.trees.predict(stacked) if len(keys) else np.zeros(0)
    scores = shipped_scores(bundle.scorer, all_logits, trees_pred)
    components, shipped = scores.components, scores.logits
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
    scored = score_folder(
        load_bundle(bundle_dir), graph_dir, labels_csv, batch_size, compile=compile, workers=workers
    )
    return scored.frame, scored.report
