"""Stage ``calibration``: fit the shipped score's calibration, threshold and intervals on val_calib.

val_calib is a split no other decision has seen, so the fits here are honest for new targets.
The maths (temperature and isotonic fits, the threshold sweep, target-grouped conformal
intervals) lives in :mod:`graphqa.maths.calibration`; this module reads the pipeline's files,
assembles the shipped score the one way graphqa does (:func:`graphqa.scorer.shipped_scores`)
and writes the calibration policy the bundle carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from graphqa.config import CalibrationConfig
from graphqa.contract import read_json
from graphqa.data import PackedSplit
from graphqa.files import write_json
from graphqa.layout import METRICS, SchemaPaths
from graphqa.maths.calibration import (
    coverage_by_band,
    fit_conformal_interval,
    fit_isotonic,
    fit_temperature,
    reliability_rows,
    threshold_sweep,
)
from graphqa.maths.metrics import expected_calibration_error
from graphqa.module import load_module
from graphqa.schema import FeatureSchema
from graphqa.scorer import (
    Scorer,
    ShippedScores,
    load_pipeline_trees,
    packed_components,
    shipped_scores,
)
from graphqa.scoring import packed_logits

#: The stage's output folder, named once.
CALIBRATION_FILE = "calibration.json"
THRESHOLDS_FILE = "thresholds.json"
PREDICTIONS_FILE = "val_calib_predictions.csv"
COVERAGE_FILE = "interval_coverage.csv"
RELIABILITY_FILE = "reliability.csv"
METRICS_FILE = METRICS


def val_calib_scores(
    *,
    model_path: str | Path,
    split: PackedSplit,
    schema_dir: str | Path,
    scorer_path: str | Path | None,
    trees_dir: str | Path | None,
) -> ShippedScores:
    """The shipped score of every val_calib graph.

    Args:
        model_path: the final network's checkpoint.
        split: the packed val_calib split.
        schema_dir: stage ``schema``'s folder (reads ``feature_metadata.json``).
        scorer_path: stage ``scorer``'s ``scorer.json``; ``None`` scores the GNN alone.
        trees_dir: stage ``trees``'s folder (needed with ``scorer_path``).

    Returns:
        The shipped logits and each component's score.
    """
    net = load_module(model_path).net
    if scorer_path is None:
        return shipped_scores(Scorer("gnn", 1.0), packed_logits(net, split).numpy(), None)
    if trees_dir is None:
        raise ValueError("calibrating a shipped scorer needs the trees folder")
    scorer = Scorer.from_dict(read_json(scorer_path), source=scorer_path)
    schema = FeatureSchema.load(SchemaPaths(Path(schema_dir)).feature_metadata)
    gnn_logits, trees_pred = packed_components(
        net=net, trees=load_pipeline_trees(trees_dir, schema), split=split, schema=schema
    )
    return shipped_scores(scorer, gnn_logits, trees_pred)


def calibration_stage(
    *,
    cfg: CalibrationConfig,
    model_path: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
    scorer_path: str | Path | None = None,
    trees_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Predict val_calib once, fit both calibrators, apply the chosen one, tune the
    acceptable-model threshold and the target-grouped interval on it.

    The interval's difficulty scale is ``cfg.interval_scale``; its coverage on val_calib is
    in-sample (>= nominal by construction when guaranteed) and is reported per DockQ band.
    With ``scorer_path`` and ``trees_dir`` everything is fitted on the *shipped* score (GNN,
    trees or blend, as a logit); without them, on the GNN's.

    Reads ``<schema_dir>/packed/val_calib.pt``, ``model_path`` and, with a scorer,
    ``<schema_dir>/feature_metadata.json``, ``scorer_path`` and ``<trees_dir>/{summary.json,
    model.txt}``. Writes into ``out_dir``: ``calibration.json`` (the policy the bundle
    carries), ``thresholds.json``, ``val_calib_predictions.csv``, ``interval_coverage.csv``,
    ``reliability.csv`` and ``metrics.json``.

    Args:
        cfg: the ``calibration:`` params section.
        model_path: the final network's checkpoint.
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.
        scorer_path: stage ``scorer``'s ``scorer.json`` (``None``: calibrate the GNN alone).
        trees_dir: stage ``trees``'s folder.

    Returns:
        The calibration policy written to ``calibration.json``.
    """
    split = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val_calib"))
    shipped = val_calib_scores(
        model_path=model_path,
        split=split,
        schema_dir=schema_dir,
        scorer_path=scorer_path,
        trees_dir=trees_dir,
    )
    logits = shipped.logits
    components = (
        {} if scorer_path is None else {f"pred_{k}": v for k, v in shipped.components.items()}
    )
    labels = split.y.double().numpy()
    raw = expit(logits)
    temperature, temperature_fit = fit_temperature(logits, labels, cfg.fit_bias, cfg.loss)
    isotonic, isotonic_fit = fit_isotonic(raw, labels)
    scores = {
        "temperature": temperature.apply(logits),
        "isotonic": isotonic.apply(raw),
        "none": raw,
    }[cfg.method]
    sweep = threshold_sweep(scores, labels, cfg.acceptable_dockq, cfg.threshold_criterion)
    targets = np.asarray(split.targets)
    scale = cfg.interval_scale
    interval = fit_conformal_interval(scores, labels, targets, cfg.coverage, scale)
    half_widths = interval.half_widths(scores, targets)
    low, high = interval.bounds(scores, targets)
    bands = coverage_by_band(scores, labels, half_widths, targets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = {
        "method": cfg.method,
        "split": "val_calib",
        "n": len(labels),
        "temperature": temperature.to_dict(),
        "isotonic": isotonic.to_dict(),
        "fit": {"temperature": temperature_fit, "isotonic": isotonic_fit},
        "conformal": interval.to_dict(),
    }
    write_json(out / CALIBRATION_FILE, calibration)
    write_json(out / THRESHOLDS_FILE, {"acceptable_dockq": cfg.acceptable_dockq, **sweep})
    csv: dict[str, Any] = {"index": False, "float_format": "%.6f"}
    pd.DataFrame(
        {
            "MODEL": split.models,
            "TARGET": split.targets,
            "dockq": labels,
            "logit": logits,
            **components,
            "pred_raw": raw,
            "pred_calibrated": scores,
            "interval_low": low,
            "interval_high": high,
        }
    ).to_csv(out / PREDICTIONS_FILE, **csv)
    pd.DataFrame([{"split": "val_calib", **row} for row in bands]).to_csv(
        out / COVERAGE_FILE, **csv
    )
    reliability = reliability_rows(raw, scores, labels, cfg.reliability_bins)
    pd.DataFrame(reliability).to_csv(out / RELIABILITY_FILE, **csv)
    metrics = {
        "calib_ece_raw": expected_calibration_error(raw, labels, cfg.reliability_bins),
        "calib_ece_calibrated": expected_calibration_error(scores, labels, cfg.reliability_bins),
        "acceptable_threshold": sweep["threshold"],
        f"acceptable_{cfg.threshold_criterion}": sweep["value"],
        "interval_half_width": float(half_widths.mean()),
        "interval_coverage": bands[0]["coverage"],
        "interval_coverage_target_mean": bands[0]["coverage_target_mean"],
        "interval_n_targets": interval.n_targets,
    }
    rounded: dict[str, Any] = {k: round(float(v), 6) for k, v in metrics.items()}
    write_json(out / METRICS_FILE, {**rounded, "interval_guarantee": interval.guarantee()})
    print(
        f"calibration: {cfg.method}; ECE {metrics['calib_ece_raw']:.4f} -> "
        f"{metrics['calib_ece_calibrated']:.4f}; threshold {sweep['threshold']:.3f}; "
        f"mean ±{metrics['interval_half_width']:.3f} ({scale} scale) for "
        f"{cfg.coverage:.0%}: {interval.guarantee()}"
    )
    return calibration
