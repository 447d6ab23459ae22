"""Calibration: known parameters recovered on synthetic data, hand-computed small cases."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import f1_score, matthews_corrcoef

from graphqa.calibrate import (
    IsotonicCalibration,
    TemperatureScaling,
    conformal_half_width,
    expected_calibration_error,
    fit_isotonic,
    fit_temperature,
    interval_coverage,
    reliability_curve,
    threshold_sweep,
)


def _logits(n: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, n)


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_temperature_recovers_known_t_from_soft_labels(loss: str) -> None:
    z = _logits()
    cal, report = fit_temperature(z, expit(z / 2.5), loss=loss)
    assert cal.temperature == pytest.approx(2.5, abs=1e-3)
    assert cal.bias == 0.0  # not fitted
    assert report["loss_after"] < report["loss_before"]
    assert report["temperature"] == cal.temperature and not report["fallback"]
    np.testing.assert_allclose(cal.apply(z), expit(z / 2.5), atol=1e-4)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_temperature_recovers_bias_when_fitted(loss: str) -> None:
    z = _logits(seed=1)
    cal, report = fit_temperature(z, expit(z / 2.5 + 0.7), fit_bias=True, loss=loss)
    assert cal.temperature == pytest.approx(2.5, abs=1e-3)
    assert cal.bias == pytest.approx(0.7, abs=1e-3)
    assert report["loss_after"] < report["loss_before"]


def test_temperature_with_binary_noise_stays_close() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 2.0, 20000)
    labels = (rng.random(z.size) < expit(z / 2.5)).astype(float)  # Bernoulli draws
    for loss in ("bce", "mse"):
        cal, report = fit_temperature(z, labels, loss=loss)  # type: ignore[arg-type]
        assert cal.temperature == pytest.approx(2.5, abs=0.1)
        assert report["loss_after"] < report["loss_before"]


def test_temperature_fit_is_deterministic() -> None:
    z = _logits(seed=3)
    labels = np.clip(expit(z / 1.7 - 0.3) + np.random.default_rng(3).normal(0, 0.05, z.size), 0, 1)
    a, ra = fit_temperature(z, labels, fit_bias=True)
    b, rb = fit_temperature(z, labels, fit_bias=True)
    assert a == b and ra == rb  # exact float equality, not approx


def test_temperature_scaling_serialises_and_validates() -> None:
    cal = TemperatureScaling(temperature=2.0, bias=-0.5)
    again = TemperatureScaling.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert cal.apply(np.array([1.0]))[0] == pytest.approx(expit(0.0))
    with pytest.raises(ValueError):
        TemperatureScaling(temperature=0.0, bias=0.0)
    with pytest.raises(ValueError):
        fit_temperature(np.array([0.0, 1.0]), np.array([0.5, 1.5]))  # label outside [0, 1]
    with pytest.raises(ValueError):
        fit_temperature(np.array([0.0, 1.0]), np.array([0.5]))  # length mismatch


# --------------------------------------------------------------------------- isotonic


def test_isotonic_fixes_monotone_distortion_and_is_monotone() -> None:
    rng = np.random.default_rng(4)
    probs = rng.random(3000)
    labels = probs**2
    cal, report = fit_isotonic(probs, labels)
    # before: E[(p - p^2)^2] = 1/3 - 1/2 + 1/5 = 1/30
    assert report["loss_before"] == pytest.approx(1 / 30, rel=0.05)
    assert report["loss_after"] < report["loss_before"] / 100
    fresh = rng.random(3000)
    assert np.mean((cal.apply(fresh) - fresh**2) ** 2) < report["loss_before"] / 100
    grid = np.linspace(-0.5, 1.5, 2001)
    out = cal.apply(grid)
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[0] == cal.y[0] and out[-1] == cal.y[-1]  # clipped outside the fitted range


def test_isotonic_round_trips_and_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    probs = rng.random(500)
    labels = np.clip(probs**1.5 + rng.normal(0, 0.1, 500), 0, 1)
    cal, _ = fit_isotonic(probs, labels)
    again = IsotonicCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(probs, labels)
    query = np.linspace(-0.2, 1.2, 301)
    np.testing.assert_allclose(again.apply(query), ref.predict(query), atol=1e-12)


# --------------------------------------------------------------------------- threshold

# positive_at=0.23 -> positives are the models scored 0.2, 0.4, 0.6 (rule: score >= t).
#   t    tp fp fn tn   F1
#   0.1  3  3  0  0    6/9
#   0.2  3  2  0  1    6/8 = 0.75  <- best; precision 3/5, recall 1, MCC 3/sqrt(5*3*3*1)
#   0.3  2  2  1  1    4/7
#   0.4  2  1  1  2    4/6
#   0.5  1  1  2  2    2/5
#   0.6  1  0  2  3    2/4
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
DOCKQ = np.array([0.1, 0.5, 0.0, 0.3, 0.2, 0.9])


def test_threshold_sweep_best_f1_by_hand() -> None:
    out = threshold_sweep(SCORES, DOCKQ)
    assert out["threshold"] == 0.2 and out["criterion"] == "f1"
    assert out["value"] == pytest.approx(0.75) and out["f1"] == pytest.approx(0.75)
    assert out["precision"] == pytest.approx(3 / 5)
    assert out["recall"] == pytest.approx(1.0)
    assert out["mcc"] == pytest.approx(3 / math.sqrt(45))
    assert (out["positives"], out["predicted_positives"], out["n"]) == (3, 5, 6)


def test_threshold_sweep_grid_tie_goes_to_lowest() -> None:
    # 0.15 predicts the same set as 0.2 (F1 0.75 tie) and is lower, so it wins.
    out = threshold_sweep(SCORES, DOCKQ, grid=np.array([0.15, 0.95]))
    assert out["threshold"] == 0.15 and out["f1"] == pytest.approx(0.75)


# Positives (labels 1) scored 0.1, 0.4, 0.6:
#   t    tp fp fn tn   F1    MCC
#   0.1  3  3  0  0    2/3   0 (undefined)
#   0.2  2  3  1  0    1/2   -3/sqrt(45)
#   0.3  2  2  1  1    4/7   0
#   0.4  2  1  1  2    2/3   (4-1)/sqrt(81) = 1/3
#   0.5  1  1  2  2    2/5   0
#   0.6  1  0  2  3    1/2   3/sqrt(1*3*3*5)   <- best MCC; precision 1, recall 1/3
BINARY = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])


def test_threshold_sweep_f1_tie_takes_lowest_threshold() -> None:
    out = threshold_sweep(SCORES, BINARY, positive_at=0.5)
    assert out["threshold"] == 0.1  # ties with 0.4 at F1 = 2/3
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(1.0)
    assert out["mcc"] == 0.0 and out["predicted_positives"] == 6


def test_threshold_sweep_mcc_criterion() -> None:
    out = threshold_sweep(SCORES, BINARY, positive_at=0.5, criterion="mcc")
    assert out["threshold"] == 0.6 and out["criterion"] == "mcc"
    assert out["value"] == pytest.approx(3 / math.sqrt(45)) == out["mcc"]
    assert out["precision"] == pytest.approx(1.0) and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(0.5)
    # MCC ties (0.2 and 0.6 both 3/sqrt(45) on DOCKQ) also go to the lowest threshold.
    assert threshold_sweep(SCORES, DOCKQ, criterion="mcc")["threshold"] == 0.2


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@pytest.mark.parametrize(("criterion", "metric"), [("f1", f1_score), ("mcc", matthews_corrcoef)])
def test_threshold_sweep_is_the_argmax_of_sklearn_metric(
    criterion: str, metric: Callable[..., float]
) -> None:
    # Many small random cases (rounded scores -> ties, varying prevalence): the chosen
    # threshold must be the lowest candidate attaining sklearn's maximum.
    for seed in range(25):
        rng = np.random.default_rng(seed)
        labels = rng.random(60) ** rng.uniform(0.3, 3.0)
        scores = np.round(labels + rng.normal(0, 0.3, 60), 1)
        out = threshold_sweep(scores, labels, criterion=criterion)  # type: ignore[arg-type]
        y = (labels >= 0.23).astype(int)
        kw = {"zero_division": 0} if criterion == "f1" else {}
        candidates = np.unique(scores)
        values = np.array([metric(y, (scores >= t).astype(int), **kw) for t in candidates])
        best = candidates[values >= values.max() - 1e-9].min()
        assert out["threshold"] == best, seed
        assert out["value"] == pytest.approx(values.max())


@pytest.mark.filterwarnings("error")
def test_threshold_sweep_without_positives_is_quiet_and_degenerate() -> None:
    out = threshold_sweep(SCORES, np.zeros(6), criterion="mcc")
    assert out["positives"] == 0 and out["value"] == 0.0
    assert out["threshold"] == 0.1  # everything ties at 0 -> lowest candidate
    assert (out["precision"], out["recall"], out["f1"]) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- conformal


def test_conformal_covers_fresh_draws() -> None:
    rng = np.random.default_rng(7)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        pred = rng.random(n)
        return pred, pred + rng.standard_t(3, n) * 0.08  # heavy-tailed residuals

    h = conformal_half_width(*draw(2000), coverage=0.9)
    pred, labels = draw(20000)
    assert 0.88 <= np.mean(np.abs(labels - pred) <= h) <= 0.93


def test_conformal_order_statistic_and_small_n() -> None:
    pred = np.zeros(10)
    residuals = np.arange(1, 11) / 10  # shuffled order must not matter
    labels = np.random.default_rng(8).permutation(residuals)
    # k = ceil(11 * 0.8) = 9 -> 9th smallest residual
    assert conformal_half_width(pred, labels, coverage=0.8) == 0.9
    # k = ceil(11 * 0.9) = 10 = n -> the max
    assert conformal_half_width(pred, labels, coverage=0.9) == 1.0
    # float slack: 25 * 0.28 = 7.000000000000001 must give k = 7, not 8
    assert conformal_half_width(np.zeros(24), np.arange(1.0, 25.0), coverage=0.28) == 7.0
    # n = 5, coverage 0.9: k = ceil(5.4) = 6 > n -> fall back to the max residual
    assert conformal_half_width(np.zeros(5), np.array([0.3, -0.7, 0.1, 0.2, 0.4]), 0.9) == 0.7


def test_interval_coverage_by_hand() -> None:
    # intervals: [0, 0.3] (w 0.3), [0.3, 0.7] (w 0.4), [0.75, 1] (w 0.25); 0.7 is outside the
    # last, 0.3 on the closed edge of the second counts as covered.
    out = interval_coverage(
        np.array([0.1, 0.5, 0.95, 0.5]), np.array([0.25, 0.3, 0.7, 0.5]), half_width=0.2
    )
    assert out["coverage"] == pytest.approx(3 / 4)
    assert out["mean_width"] == pytest.approx((0.3 + 0.4 + 0.25 + 0.4) / 4)
    assert interval_coverage(np.array([0.5]), np.array([0.5]), 2.0)["mean_width"] == 1.0
    with pytest.raises(ValueError):
        interval_coverage(np.array([0.5]), np.array([0.5]), -0.1)


# --------------------------------------------------------------------------- reliability


def test_reliability_curve_by_hand() -> None:
    probs = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    labels = np.array([0.0, 0.5, 0.1, 0.9, 0.6])
    curve = reliability_curve(probs, labels, bins=10)
    assert [(b["bin_lower"], b["bin_upper"], b["count"]) for b in curve] == [
        (0.0, 0.1, 1),
        (0.1, 0.2, 2),
        (pytest.approx(0.9), 1.0, 2),  # 1.0 lands in the closed last bin; empty bins skipped
    ]
    assert [b["mean_predicted"] for b in curve] == pytest.approx([0.05, 0.15, 0.975])
    assert [b["mean_observed"] for b in curve] == pytest.approx([0.0, 0.3, 0.75])
    # ECE = 1/5 * 0.05 + 2/5 * 0.15 + 2/5 * 0.225
    expected = 0.2 * 0.05 + 0.4 * 0.15 + 0.4 * 0.225
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(expected)


def test_ece_zero_when_each_bin_is_calibrated() -> None:
    probs = np.array([0.1, 0.3, 0.3, 0.8, 0.85])
    labels = np.array([0.1, 0.2, 0.4, 0.9, 0.75])  # bin means match: 0.1, 0.3, 0.825
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.0, abs=1e-12)
    assert len(reliability_curve(probs, labels, bins=1)) == 1
    with pytest.raises(ValueError):
        reliability_curve(np.array([1.2]), np.array([1.0]))


def test_calibration_stage_fits_on_val_calib_and_writes_policy(
    tiny_run: Path, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    from graphqa.calibrate import calibrate_final
    from graphqa.config import parse_params
    from graphqa.data import PackedSplit

    cfg = parse_params({}, {"calibration.method": "isotonic"}).calibration
    out = tmp_path / "calibration"
    calibrate_final(
        cfg=cfg,
        model_path=tiny_run / "checkpoints" / "best.ckpt",
        schema_dir=tiny_schema_dir,
        out_dir=out,
    )
    calibration = json.loads((out / "calibration.json").read_text())
    thresholds = json.loads((out / "thresholds.json").read_text())
    val_calib = PackedSplit.load(tiny_schema_dir / "packed" / "val_calib.pt")
    assert calibration["split"] == "val_calib" and calibration["method"] == "isotonic"
    assert calibration["n"] == len(val_calib)
    fit = calibration["fit"]["isotonic"]
    assert fit["loss_after"] <= fit["loss_before"]
    assert calibration["conformal"]["half_width"] > 0
    assert thresholds["acceptable_dockq"] == 0.23 and 0 <= thresholds["threshold"] <= 1
    predictions = (out / "val_calib_predictions.csv").read_text().splitlines()
    assert predictions[0] == "MODEL,TARGET,dockq,logit,pred_raw,pred_calibrated"
    assert [line.split(",")[0] for line in predictions[1:]] == val_calib.models
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "calib_ece_raw",
        "calib_ece_calibrated",
        "acceptable_threshold",
        "acceptable_f1",
        "interval_half_width",
    }
