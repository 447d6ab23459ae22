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

from graphqa.maths.calibration import (
    INTERVAL_SCALES,
    ConformalInterval,
    IsotonicCalibration,
    TemperatureScaling,
    conformal_half_width,
    coverage_by_band,
    difficulty_scale,
    fit_conformal_interval,
    fit_isotonic,
    fit_temperature,
    grouped_conformal_quantile,
    interval_coverage,
    min_calibration_targets,
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
    # one half-width per model: [0, 0.2] misses 0.25, [0.4, 0.6] has 0.5
    per_model = interval_coverage(np.array([0.1, 0.5]), np.array([0.25, 0.5]), np.array([0.1, 0.1]))
    assert per_model["coverage"] == 0.5 and per_model["mean_width"] == pytest.approx(0.2)


def test_grouped_quantile_weights_targets_equally_by_hand() -> None:
    # A: 4 models, scores .1 .2 .3 .4 (each 1/4 of A); B, C, D: one model each, score .5 .6 .7
    # coverage 0.6, m = 4: need sum_j F_j(q) >= 5 * 0.6 = 3.
    #   q = .4 -> F_A = 1, others 0 -> 1;  q = .5 -> 2;  q = .6 -> 3  => q = .6
    scores = np.array([0.3, 0.1, 0.4, 0.2, 0.5, 0.6, 0.7])
    groups = np.array(["A", "A", "A", "A", "B", "C", "D"])
    assert grouped_conformal_quantile(scores, groups, 0.6) == (0.6, True)
    # plain split conformal pools models: k = ceil(8 * 0.6) = 5 -> .5; A's 4 models count 4x
    assert conformal_half_width(np.zeros(7), scores, 0.6) == 0.5
    # coverage 0.8 needs >= 4 targets: 5 * 0.8 = 4 = m -> the largest score, still guaranteed
    assert min_calibration_targets(0.8) == 4 and min_calibration_targets(0.9) == 9
    assert grouped_conformal_quantile(scores, groups, 0.8) == (0.7, True)
    # 0.9 needs 9 targets: no finite quantile, the largest score and no guarantee
    assert grouped_conformal_quantile(scores, groups, 0.9) == (0.7, False)


def test_grouped_quantile_with_singleton_targets_is_split_conformal() -> None:
    rng = np.random.default_rng(11)
    for n in (9, 10, 24, 101):
        scores = rng.random(n)
        for coverage in (0.28, 0.5, 0.8, 0.9):
            q, _ = grouped_conformal_quantile(scores, np.arange(n), coverage)
            k = math.ceil((n + 1) * coverage - 1e-9)
            assert q == (np.sort(scores)[k - 1] if k <= n else scores.max())


def test_difficulty_scales_by_hand() -> None:
    pred = np.array([0.5, 0.1, 0.0, 0.3])
    groups = np.array(["A", "A", "B", "B"])
    np.testing.assert_allclose(difficulty_scale(pred, groups, "none"), 1.0)
    np.testing.assert_allclose(
        difficulty_scale(pred, groups, "pvar", floor=0.05), [0.55, 0.35, 0.05, np.sqrt(0.21) + 0.05]
    )
    # population sd within target: A {.5, .1} -> .2, B {0, .3} -> .15
    np.testing.assert_allclose(
        difficulty_scale(pred, groups, "target_spread", floor=0.05), [0.25, 0.25, 0.2, 0.2]
    )
    with pytest.raises(ValueError, match="scale"):
        difficulty_scale(pred, groups, "bogus")


def test_conformal_interval_round_trips_and_reads_old_bundles() -> None:
    pred = np.array([0.1, 0.2, 0.8, 0.5, 0.4, 0.3, 0.9, 0.05, 0.6, 0.7])
    labels = np.array([0.15, 0.1, 0.7, 0.55, 0.2, 0.35, 1.0, 0.0, 0.5, 0.9])
    groups = np.arange(10)  # one model per target
    interval = fit_conformal_interval(pred, labels, groups, coverage=0.9, scale="pvar")
    assert interval.guaranteed and interval.n_targets == 10 and interval.n == 10
    again = ConformalInterval.from_dict(json.loads(json.dumps(interval.to_dict())))
    assert again == interval
    low, high = interval.bounds(pred, groups)
    assert (low >= 0).all() and (high <= 1).all() and (low <= pred).all() and (pred <= high).all()
    assert interval.guarantee().startswith("90% expected coverage of the models of a new target")
    old = ConformalInterval.from_dict({"coverage": 0.9, "half_width": 0.1})
    assert old.method == "split" and not old.guaranteed
    np.testing.assert_allclose(old.half_widths(pred, groups), 0.1)
    few = fit_conformal_interval(pred[:4], labels[:4], groups[:4], coverage=0.9)
    assert not few.guaranteed and few.guarantee().startswith("none")


def test_coverage_by_band_by_hand() -> None:
    # half-width 0.1: covered = [T, F, T, T, F]
    pred = np.array([0.10, 0.10, 0.40, 0.60, 0.95])
    labels = np.array([0.15, 0.30, 0.45, 0.55, 0.70])
    groups = np.array(["A", "A", "A", "B", "B"])
    rows = {r["band"]: r for r in coverage_by_band(pred, labels, np.full(5, 0.1), groups)}
    assert rows["all"]["coverage"] == pytest.approx(3 / 5)
    assert rows["all"]["coverage_target_mean"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert rows["<0.23"]["n_models"] == 1 and rows["<0.23"]["coverage"] == 1.0
    # 0.23-0.49: A's 0.30 (missed) and 0.45 (covered) -> 1/2, one target
    assert rows["0.23-0.49"]["coverage"] == 0.5 and rows["0.23-0.49"]["n_targets"] == 1
    # 0.49-0.80: B's 0.55 (covered) and 0.70 (missed: [0.85, 1])
    assert rows["0.49-0.80"]["coverage"] == 0.5
    assert rows[">=0.80"] == {"band": ">=0.80", "n_models": 0, "n_targets": 0}


def _targets_of_varied_difficulty(
    rng: np.random.Generator, n_targets: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DockQ-like labels (mostly low); 30 % of targets are hard (residual sd 0.15-0.30 instead
    of 0.02-0.06) and have fewer models (6-14 instead of 20-59), as hard complexes often yield
    fewer decoys. Targets are exchangeable: any split of them is a random split."""
    preds, labels, groups = [], [], []
    for target in range(n_targets):
        hard = rng.random() < 0.3
        sd = rng.uniform(0.15, 0.30) if hard else rng.uniform(0.02, 0.06)
        n = int(rng.integers(6, 15) if hard else rng.integers(20, 60))
        y = rng.beta(0.6, 1.5, n)
        preds.append(np.clip(y + sd * rng.standard_normal(n), 0.0, 1.0))
        labels.append(y)
        groups.append(np.full(n, target))
    return np.concatenate(preds), np.concatenate(labels), np.concatenate(groups)


def _target_mean_coverage(
    pred: np.ndarray, labels: np.ndarray, groups: np.ndarray, half: np.ndarray | float
) -> float:
    half = np.broadcast_to(half, pred.shape)
    covered = (labels >= pred - half) & (labels <= pred + half)
    return float(np.mean([covered[groups == t].mean() for t in np.unique(groups)]))


def test_target_grouped_interval_keeps_its_coverage_on_held_out_targets() -> None:
    """Nominal 90 %: over 20 random splits into 20 calibration and 20 held-out targets, the
    target-grouped interval covers >= 85 % of a held-out target's models on average (for every
    difficulty scale); plain split conformal, dominated by the easy targets' many models, does
    not."""
    plain: list[float] = []
    grouped: dict[str, list[float]] = {scale: [] for scale in INTERVAL_SCALES}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        pred, labels, groups = _targets_of_varied_difficulty(rng)
        calib = np.isin(groups, rng.permutation(40)[:20])
        held = ~calib
        half = conformal_half_width(pred[calib], labels[calib], coverage=0.9)
        plain.append(_target_mean_coverage(pred[held], labels[held], groups[held], half))
        for scale in INTERVAL_SCALES:
            interval = fit_conformal_interval(
                pred[calib], labels[calib], groups[calib], coverage=0.9, scale=scale
            )
            assert interval.guaranteed
            halves = interval.half_widths(pred[held], groups[held])
            grouped[scale].append(
                _target_mean_coverage(pred[held], labels[held], groups[held], halves)
            )
    assert np.mean(plain) < 0.85  # the data really defeats the plain interval
    for scale, coverages in grouped.items():
        assert np.mean(coverages) >= 0.85, scale


def test_calibration_stage_fits_on_val_calib_and_writes_policy(
    tiny_run: Path, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    from graphqa.calibration import calibration_stage
    from graphqa.config import parse_params
    from graphqa.data import PackedSplit

    cfg = parse_params({}, {"calibration.method": "isotonic"}).calibration
    out = tmp_path / "calibration"
    calibration_stage(
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
    conformal = calibration["conformal"]
    assert conformal["method"] == "target_grouped" and conformal["quantile"] > 0
    assert conformal["n_targets"] == len(set(val_calib.targets))
    assert conformal["guaranteed"] == (conformal["n_targets"] >= 9)  # 90 % needs 9 targets
    assert thresholds["acceptable_dockq"] == 0.23 and 0 <= thresholds["threshold"] <= 1
    predictions = (out / "val_calib_predictions.csv").read_text().splitlines()
    assert predictions[0] == (
        "MODEL,TARGET,dockq,logit,pred_raw,pred_calibrated,interval_low,interval_high"
    )
    assert [line.split(",")[0] for line in predictions[1:]] == val_calib.models
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "calib_ece_raw",
        "calib_ece_calibrated",
        "acceptable_threshold",
        "acceptable_f1",
        "interval_half_width",
        "interval_coverage",
        "interval_coverage_target_mean",
        "interval_n_targets",
        "interval_guarantee",
    }
    assert metrics["interval_guarantee"] == conformal["guarantee"]
    bands = (out / "interval_coverage.csv").read_text().splitlines()
    assert bands[0].startswith("split,band,n_models,n_targets,coverage")
    assert [line.split(",")[1] for line in bands[1:]] == [
        "all",
        "<0.23",
        "0.23-0.49",
        "0.49-0.80",
        ">=0.80",
    ]
