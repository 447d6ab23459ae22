"""The evaluate stage: per-target tables, intervals over targets, every family side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphqa.bundle import build_bundle
from graphqa.calibration import calibration_stage
from graphqa.config import Params
from graphqa.evaluate import evaluate_stage
from graphqa.files import write_json
from graphqa.predict import predict_with_bundle
from graphqa.scorer import Scorer

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
    "ref_gnn_ranking_loss",
    "ref_blend_ranking_loss",
    "ref_random_ranking_loss",
    "shipped_minus_trees_ranking_loss",
    "shipped_minus_gnn_ranking_loss",
    "test_interval_coverage_target_mean",
]


@pytest.fixture(scope="module")
def calibrated_bundle(
    tiny_params: Params,
    tiny_run: Path,
    tiny_schema_dir: Path,
    tiny_trees_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A bundle shipping the blend, as the pipeline builds it: trees, scorer choice and a
    calibration.json from the calibration stage (target-grouped) fitted on the blend."""
    tmp = tmp_path_factory.mktemp("calibrated")
    write_json(tmp / "scorer.json", Scorer("blend", 0.6).to_dict())
    calibration_stage(
        cfg=tiny_params.calibration,
        model_path=tiny_run / "checkpoints" / "best.ckpt",
        schema_dir=tiny_schema_dir,
        out_dir=tmp / "calibration",
        scorer_path=tmp / "scorer.json",
        trees_dir=tiny_trees_dir,
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
        trees_model=tiny_trees_dir / "model.txt",
        scorer=tmp / "scorer.json",
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
    evaluate_stage(
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
    assert len(metrics) <= 64  # headline numbers of 5 rankers only; tables go to CSV
    assert None not in metrics.values()  # the bundle's own trees: no fallback fit to report

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
            for ranker in ("gnn", "trees", "blend", "random")
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
        "shipped",
        "gnn",
        "trees",
        "blend",
        "random",
        "shipped_minus_gnn",
        "shipped_minus_trees",
        "shipped_minus_blend",
        "shipped_minus_random",
    }
    # the shipped score is the blend: same ranking as its component column
    shipped = summary.set_index(["ranker", "metric"])["value"]
    assert shipped["shipped", "ranking_loss"] == pytest.approx(shipped["blend", "ranking_loss"])
    assert metrics["shipped_family"] == "blend"
    bands = pd.read_csv(evaluated / "interval_coverage.csv")
    assert list(bands["band"]) == ["all", "<0.23", "0.23-0.49", "0.49-0.80", ">=0.80"]
    assert bands["n_models"].iloc[0] == len(labels)
    predictions = pd.read_csv(evaluated / "predictions.csv")
    assert {
        "pred_gnn",
        "pred_trees",
        "pred_blend",
        "pred_calibrated",
        "interval_low",
        "interval_high",
        "dockq",
    } <= set(predictions)
    np.testing.assert_allclose(
        predictions["pred_blend"],
        0.6 * predictions["pred_gnn"] + 0.4 * predictions["pred_trees"],
        atol=2e-6,  # CSV rounding
    )


def test_evaluate_is_reproducible(
    evaluated: Path,
    calibrated_bundle: Path,
    tiny_dataset: Path,
    tiny_schema_dir: Path,
    tmp_path: Path,
) -> None:
    evaluate_stage(
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


def test_reader_processes_score_the_same_and_refuse_a_bad_file_in_one_line(
    calibrated_bundle: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """``graphqa predict`` reads files in separate processes by default: the scores must be
    those of reading in-process, and a broken file in a later chunk must still come back as
    the one-line refusal naming it (not a worker traceback), with no output."""
    import shutil

    from graphqa.contract import DataContractError

    graphs = tiny_dataset / "graphs"
    in_process, _ = predict_with_bundle(calibrated_bundle, graphs, batch_size=4, workers=0)
    readers, _ = predict_with_bundle(calibrated_bundle, graphs, batch_size=4, workers=2)
    assert len(in_process) > 3 * 4  # several chunks, so the readers interleave
    pd.testing.assert_frame_equal(readers, in_process, check_exact=True)

    broken = tmp_path / "graphs"
    shutil.copytree(graphs, broken)
    victim = sorted(broken.rglob("*.pt"))[-2]  # in a late chunk
    victim.write_bytes(b"not a torch archive")
    with pytest.raises(DataContractError) as refused:
        predict_with_bundle(calibrated_bundle, broken, batch_size=4, workers=2)
    message = str(refused.value)
    assert str(victim) in message and "unreadable file" in message
    assert "\n" not in message and "Traceback" not in message


def test_predict_defaults_split_the_cores_and_match_the_cli() -> None:
    from graphqa.cli import build_parser
    from graphqa.predict import PREDICT_BATCH_SIZE, default_readers

    assert default_readers(1) == (0, 1)  # one core: read in-process, no hand-over
    assert default_readers(2) == (1, 1)
    assert default_readers(8) == (4, 4)
    args = build_parser().parse_args(["predict", "--bundle", "b", "--graphs", "g"])
    assert args.batch_size == PREDICT_BATCH_SIZE and args.workers is None
