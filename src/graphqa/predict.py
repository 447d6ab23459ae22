"""Scoring graph folders with a shipped bundle (and the per-target ranking report).

Graph folders are streamed from disk a batch at a time, so memory does not grow with the
number of graphs; every graph is validated against the bundle's schema before it is scored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from graphqa.metrics import pearson, spearman
from graphqa.model import TopoQANet
from graphqa.schema import FeatureSchema, match_labels, read_labels, resolve_schema, validate_graph

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


@torch.no_grad()
def stream_logits(
    net: TopoQANet, refs: list[GraphRef], schema: FeatureSchema, batch_size: int = 64
) -> Iterator[tuple[list[GraphRef], Tensor]]:
    """Validate and score graphs a batch at a time, reading each file once."""
    net = net.eval()
    for start in range(0, len(refs), batch_size):
        chunk = refs[start : start + batch_size]
        graphs = []
        for ref in chunk:
            data = load_graph(ref.path)
            validate_graph(data, ref.path, schema)
            graphs.append(
                data.__class__(x=data.x, edge_index=data.edge_index, edge_attr=data.edge_attr)
            )
        batch = Batch.from_data_list(graphs)
        yield (
            chunk,
            net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs).double(),
        )


# --------------------------------------------------------------------------------------------
# Per-target ranking report


def ranking_report(
    frame: pd.DataFrame,
    score: str = "pred_calibrated",
    thresholds: tuple[float, ...] = (0.23, 0.49, 0.80),
    top_k: int = 10,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-target ranking loss and top-k hits, plus roll-ups over all graphs and targets."""
    per_target = []
    for target, group in frame.groupby("TARGET", sort=True):
        order = group.sort_values([score, "MODEL"], ascending=[False, True])
        row: dict[str, Any] = {
            "TARGET": target,
            "models": len(group),
            "ranking_loss": float(group["dockq"].max() - order["dockq"].iloc[0]),
        }
        for t in thresholds:
            row[f"top{top_k}_hit_{t:.2f}"] = (
                int((order["dockq"].iloc[:top_k] >= t).any())
                if (group["dockq"] >= t).any()
                else None
            )
        per_target.append(row)
    targets = pd.DataFrame(per_target)
    pred, true = frame[score].to_numpy(float), frame["dockq"].to_numpy(float)
    rollup = {
        "pearson": pearson(pred, true),
        "spearman": spearman(pred, true),
        "mae": float(np.abs(pred - true).mean()),
        "ranking_loss": float(targets["ranking_loss"].mean()),
    }
    for t in thresholds:
        col = targets[f"top{top_k}_hit_{t:.2f}"].dropna()
        rollup[f"hit_rate_{round(t * 100):03d}"] = float(col.mean()) if len(col) else None
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
) -> pd.DataFrame:
    """One row per model: raw and calibrated DockQ, interval, acceptable flag, rank."""
    from scipy.special import expit

    cal = calibrated(calibration, logits)
    half = float(calibration["conformal"]["half_width"])
    frame = pd.DataFrame(
        {
            "TARGET": [k.target for k in keys],
            "MODEL": [k.model for k in keys],
            "pred_raw": expit(logits),
            "pred_calibrated": cal,
            "interval_low": np.clip(cal - half, 0.0, 1.0),
            "interval_high": np.clip(cal + half, 0.0, 1.0),
            "acceptable": cal >= float(thresholds["threshold"]),
        }
    )
    frame["rank_in_target"] = (
        frame.sort_values(["pred_calibrated", "MODEL"], ascending=[False, True])
        .groupby("TARGET")
        .cumcount()
        .reindex(frame.index)
        + 1
    )
    if labels:
        frame["dockq"] = [labels[m] for m in frame["MODEL"]]
    return frame


def predict_with_bundle(
    bundle_dir: str | Path,
    graph_dir: str | Path,
    labels_csv: str | Path | None = None,
    batch_size: int = 64,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a graph folder with a verified bundle; metrics too when labels are given."""
    from graphqa.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    schema = check_schema(bundle.schema, graph_dir)
    refs, labels = graph_refs(graph_dir, labels_csv)
    start = time.perf_counter()
    keys: list[GraphRef] = []
    logits: list[np.ndarray] = []
    for chunk, out in stream_logits(bundle.net, refs, schema, batch_size):
        keys += chunk
        logits.append(out.numpy())
    seconds = time.perf_counter() - start
    all_logits = np.concatenate(logits) if logits else np.zeros(0)
    frame = score_frame(keys, all_logits, bundle.calibration, bundle.thresholds, labels)
    report: dict[str, Any] = {
        "graphs": len(frame),
        "interval_half_width": float(bundle.calibration["conformal"]["half_width"]),
        "seconds": round(seconds, 3),
        "graphs_per_s": round(len(frame) / seconds, 1) if seconds > 0 else None,
    }
    if labels:
        per_target, rollup = ranking_report(frame)
        report["metrics"] = rollup
        report["per_target"] = per_target
    return frame, report


def evaluate_bundle(
    *,
    bundle_dir: str | Path,
    graph_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    batch_size: int = 64,
    bins: int = 10,
) -> dict[str, Any]:
    """Stage ``evaluate``: the bundle on the test split through the same predict code."""
    from graphqa.calibrate import (
        expected_calibration_error,
        interval_coverage,
        reliability_curve,
    )
    from graphqa.contract import write_json

    frame, report = predict_with_bundle(bundle_dir, graph_dir, labels_csv, batch_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    true = frame["dockq"].to_numpy(float)
    raw, cal = frame["pred_raw"].to_numpy(float), frame["pred_calibrated"].to_numpy(float)
    coverage = interval_coverage(cal, true, report["interval_half_width"])
    m = report["metrics"]
    metrics = {
        "test_pearson": m["pearson"],
        "test_spearman": m["spearman"],
        "test_mae": m["mae"],
        "test_ranking_loss": m["ranking_loss"],
        "test_hit_rate_023": m["hit_rate_023"],
        "test_hit_rate_049": m["hit_rate_049"],
        "test_hit_rate_080": m["hit_rate_080"],
        "test_ece_raw": expected_calibration_error(raw, true, bins),
        "test_ece_calibrated": expected_calibration_error(cal, true, bins),
        "test_interval_coverage": coverage["coverage"],
        "test_interval_width": coverage["mean_width"],
    }
    metrics = {k: None if v is None else round(float(v), 6) for k, v in metrics.items()}
    write_json(out_dir / "metrics.json", metrics)
    frame.to_csv(out_dir / "predictions.csv", index=False, float_format="%.6f")
    report["per_target"].to_csv(out_dir / "per_target.csv", index=False, float_format="%.6f")
    rows = [{"calibration": "raw", **r} for r in reliability_curve(raw, true, bins)]
    rows += [{"calibration": "calibrated", **r} for r in reliability_curve(cal, true, bins)]
    pd.DataFrame(rows).to_csv(out_dir / "reliability.csv", index=False, float_format="%.6f")
    print(
        f"evaluate: {len(frame)} test graphs at {report['graphs_per_s']} graphs/s; "
        f"Spearman {metrics['test_spearman']}, ranking loss {metrics['test_ranking_loss']}"
    )
    return metrics
