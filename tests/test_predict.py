"""The evaluate stage: per-target tables, intervals over targets, reference rankers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphqa.bundle import build_bundle
from graphqa.calibrate import calibrate_final
from graphqa.config import Params
from graphqa.predict import evaluate_bundle, predict_with_bundle

RANKED = ("top1_dockq", "ranking_loss", "hits_023", "hits_049", "hits_080")
CI_METRICS = [
    "test_ranking_loss",
    "test_spearman_pooled",
    "test_spearman_per_target_mean",
    "test_hits_023",
    "test_hits_049",
    "test_hits_080",
    "ref_trees_ranking_loss",
    "ref_trees_spearman_pooled",
    "ref_random_ranking_loss",
    "gnn_minus_trees_ranking_loss",
    "test_interval_coverage_target_mean",
]


@pytest.fixture(scope="module")
def calibrated_bundle(
    tiny_params: Params,
    tiny_run: Path,
    tiny_schema_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A bundle whose calibration.json comes from the calibration stage (target-grouped)."""
    tmp = tmp_path_factory.mktemp("calibrated")
    calibrate_final(
        cfg=tiny_params.calibration,
        model_path=tiny_run / "checkpoints" / "best.ckpt",
        schema_dir=tiny_schema_dir,
        out_dir=tmp / "calibration",
    )
    summary = json.loads((tiny_run / "summary.json").read_text())
    build_bundle(
        model_ckpt=tiny_run / "checkpoints" / "best.ckpt",
        feature_metadata=tiny_schema_dir / "feature_metadata.json",
        calibration=tmp / "calibration" / "calibration.json",
        thresholds=tmp / "calibration" / "thresholds.json",
        params=summary["params"],
        provenance={"source": "test"},
        metrics={},
        out_dir=tmp / "bundle",
    )
    return tmp / "bundle"


@pytest.fixture(scope="module")
def evaluated(
    calibrated_bundle: Path,
    tiny_dataset: Path,
    tiny_schema_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    # The train labels: the tiny profile's test split holds a single target, and the
    # mechanics (bootstrap over targets, rankers side by side) need several.
    out = tmp_path_factory.mktemp("evaluate") / "evaluate"
    evaluate_bundle(
        bundle_dir=calibrated_bundle,
        graph_dir=tiny_dataset / "graphs",
        labels_csv=tiny_dataset / "labels" / "train.csv",
        out_dir=out,
        schema_dir=tiny_schema_dir,
        batch_size=8,
        n_resamples=500,
    )
    return out


def test_predict_writes_target_grouped_intervals(
    calibrated_bundle: Path, tiny_dataset: Path
) -> None:
    frame, report = predict_with_bundle(calibrated_bundle, tiny_dataset / "graphs")
    interval = report["interval"]
    assert interval["method"] == "target_grouped" and interval["scale"] == "pvar"
    p = frame["pred_calibrated"].to_numpy()
    half = interval["quantile"] * (np.sqrt(p * (1 - p)) + interval["floor"])
    np.testing.assert_allclose(frame["interval_low"], np.clip(p - half, 0, 1), atol=1e-12)
    np.testing.assert_allclose(frame["interval_high"], np.clip(p + half, 0, 1), atol=1e-12)
    json.dumps({k: v for k, v in report.items() if k != "per_target"})  # the CLI prints it


def test_evaluate_writes_tables_and_headline_intervals(evaluated: Path, tiny_dataset: Path) -> None:
    metrics = json.loads((evaluated / "metrics.json").read_text())
    labels = pd.read_csv(tiny_dataset / "labels" / "train.csv")
    labels["TARGET"] = labels["MODEL"].str.split("_").str[0]
    n_targets = labels["TARGET"].nunique()
    assert metrics["test_n_targets"] == n_targets >= 3
    assert metrics["test_n_models"] == len(labels)
    for name in CI_METRICS:
        low, value, high = (metrics[f"{name}_ci_low"], metrics[name], metrics[f"{name}_ci_high"])
        assert low <= value + 1e-6 and value <= high + 1e-6, name
    assert {"test_mse", "test_mae", "test_pearson", "test_ece_calibrated"} <= set(metrics)
    assert "not per target" in metrics["interval_guarantee"] or metrics[
        "interval_guarantee"
    ].startswith("none")
    # the random reference is exact: mean over targets of best - mean DockQ
    by_target = labels.groupby("TARGET")["dockq"]
    expected = float((by_target.max() - by_target.mean()).mean())
    assert metrics["ref_random_ranking_loss"] == pytest.approx(expected, abs=1e-6)
    assert len(metrics) <= 45  # headline numbers only; tables go to CSV

    per_target = pd.read_csv(evaluated / "per_target.csv")
    assert len(per_target) == n_targets and per_target["TARGET"].is_unique
    assert list(per_target.columns) == [
        "TARGET",
        "n_models",
        "best_dockq",
        "top1_dockq",
        "ranking_loss",
        "hits_023",
        "hits_049",
        "hits_080",
        "spearman",
        "interval_coverage",
        *(
            f"{ranker}_{column}"
            for ranker in ("trees", "random")
            for column in (*RANKED, "spearman")
        ),
    ]
    assert per_target["ranking_loss"].mean() == pytest.approx(
        metrics["test_ranking_loss"], abs=1e-6
    )
    assert per_target["hits_023"].dtype.kind == "i"  # counts
    assert (per_target["hits_023"] <= np.minimum(per_target["n_models"], 10)).all()
    assert per_target["random_ranking_loss"].mean() == pytest.approx(expected, abs=1e-6)
    assert per_target["trees_ranking_loss"].mean() == pytest.approx(
        metrics["ref_trees_ranking_loss"], abs=1e-6
    )

    summary = pd.read_csv(evaluated / "summary.csv")
    assert list(summary.columns) == ["ranker", "metric", "value", "ci_low", "ci_high"]
    assert set(summary["ranker"]) == {
        "gnn",
        "pooled_trees",
        "random",
        "gnn_minus_trees",
        "gnn_minus_random",
    }
    bands = pd.read_csv(evaluated / "interval_coverage.csv")
    assert list(bands["band"]) == ["all", "<0.23", "0.23-0.49", "0.49-0.80", ">=0.80"]
    assert bands["n_models"].iloc[0] == len(labels)
    predictions = pd.read_csv(evaluated / "predictions.csv")
    assert {"pred_calibrated", "pred_trees", "interval_low", "interval_high", "dockq"} <= set(
        predictions
    )


def test_evaluate_is_reproducible(
    evaluated: Path,
    calibrated_bundle: Path,
    tiny_dataset: Path,
    tiny_schema_dir: Path,
    tmp_path: Path,
) -> None:
    evaluate_bundle(
        bundle_dir=calibrated_bundle,
        graph_dir=tiny_dataset / "graphs",
        labels_csv=tiny_dataset / "labels" / "train.csv",
        out_dir=tmp_path / "again",
        schema_dir=tiny_schema_dir,
        batch_size=5,  # batching must not change anything
        n_resamples=500,
    )
    for name in ("metrics.json", "per_target.csv", "summary.csv", "predictions.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (evaluated / name).read_bytes(), name
