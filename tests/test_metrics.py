"""Metric values computed by hand on tiny arrays."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from graphqa.maths.metrics import (
    bootstrap_mean,
    bootstrap_pooled,
    ema,
    expected_calibration_error,
    hits_key,
    mae,
    mse,
    pearson,
    per_target_table,
    percentile_interval,
    ranking_groups,
    ranking_metrics,
    ranks_within_targets,
    reliability_curve,
    resample_targets,
    selection_score,
    spearman,
    split_metrics,
    tuning_metrics,
)

# Target A: argmax pred is decoy 1 (true 0.5), best 0.9 -> regret 0.4.
#   pred ranks [1, 3, 2], true ranks [1, 2, 3] -> d^2 = 2, rho = 1 - 6*2/(3*8) = 0.5.
#   top-1 decoy has true 0.5 >= 0.23 -> hit.
# Target B: constant pred -> argmax tie resolves to decoy 0 (true 0.1), regret 0.6 - 0.1 = 0.5;
#   Spearman undefined -> skipped; top-1 (stable) is decoy 0 (0.1 < 0.23) -> miss.
# Target C: no decoy >= 0.23 -> skipped for hit rate; regret 0.2 - 0.2 = 0; rho = 1.
PRED = np.array([0.1, 0.7, 0.4, 0.5, 0.5, 0.5, 0.3, 0.8])
TRUE = np.array([0.2, 0.5, 0.9, 0.1, 0.6, 0.3, 0.1, 0.2])
GROUPS = np.array(["A", "A", "A", "B", "B", "B", "C", "C"])


def test_ranking_metrics_by_hand() -> None:
    out = ranking_metrics(PRED, TRUE, GROUPS, hit_dockq=0.23, top_k=1)
    assert set(out) == {"regret", "target_spearman", "hit_rate"}
    assert out["regret"] == pytest.approx((0.4 + 0.5 + 0.0) / 3)
    assert out["target_spearman"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["hit_rate"] == pytest.approx(0.5)  # A hit, B miss, C skipped


def test_ranking_metrics_top_k_widens_hits() -> None:
    # top-2 of B (stable order on ties) is decoys 0 and 1; decoy 1 has 0.6 -> hit.
    out = ranking_metrics(PRED, TRUE, GROUPS, hit_dockq=0.23, top_k=2)
    assert out["hit_rate"] == pytest.approx(1.0)
    # a stricter threshold: only A (0.9) and B (0.6) qualify; top-1 of A has 0.5 < 0.55
    out = ranking_metrics(PRED, TRUE, GROUPS, hit_dockq=0.55, top_k=1)
    assert out["hit_rate"] == pytest.approx(0.0)


def test_ranking_metrics_two_targets() -> None:
    # T1: tie between decoys 0 and 1 -> first (true 0.3) is picked: regret 0.8 - 0.3 = 0.5.
    #     Spearman from ranks below; top-1 decoy 0 has 0.3 >= 0.23 -> hit.
    # T2: no decoy >= 0.23 (skipped for hit rate); reversed order -> rho = -1, regret 0.2 - 0.0.
    pred = np.array([0.9, 0.9, 0.2, 0.1, 0.2, 0.3])
    true = np.array([0.3, 0.8, 0.1, 0.2, 0.1, 0.0])
    groups = np.array([1, 1, 1, 2, 2, 2])
    # T1 ranks: x = [2.5, 2.5, 1] (mean 2), y = [2, 3, 1] (mean 2)
    # dx = [.5, .5, -1], dy = [0, 1, -1]: sum dxdy = 1.5, sum dx^2 = 1.5, sum dy^2 = 2
    rho1 = 1.5 / math.sqrt(1.5 * 2)
    out = ranking_metrics(pred, true, groups, hit_dockq=0.23, top_k=1)
    assert out["regret"] == pytest.approx((0.5 + 0.2) / 2)
    assert out["target_spearman"] == pytest.approx((rho1 - 1.0) / 2)
    assert out["hit_rate"] == pytest.approx(1.0)


def test_ranking_metrics_independent_of_row_interleaving() -> None:
    # Interleave targets but keep each target's decoy order: nothing may change.
    order = np.array([0, 3, 6, 1, 4, 7, 2, 5])
    a = ranking_metrics(PRED, TRUE, GROUPS, top_k=1)
    b = ranking_metrics(PRED[order], TRUE[order], GROUPS[order], top_k=1)
    assert a == pytest.approx(b)


def test_ranking_metrics_skips_single_decoy_and_constant_labels() -> None:
    pred = np.array([0.4, 0.1, 0.9, 0.5])
    true = np.array([0.7, 0.5, 0.5, 0.3])
    groups = np.array(["solo", "flat", "flat", "other"])
    out = ranking_metrics(pred, true, groups, top_k=1)
    assert math.isnan(out["target_spearman"])  # no target has a defined Spearman
    assert out["regret"] == pytest.approx(0.0)
    assert out["hit_rate"] == pytest.approx(1.0)


def test_ranking_metrics_nan_when_nothing_qualifies() -> None:
    out = ranking_metrics(np.array([0.1, 0.2]), np.array([0.1, 0.05]), np.array([0, 0]))
    assert math.isnan(out["hit_rate"])
    assert out["target_spearman"] == pytest.approx(-1.0)
    assert out["regret"] == pytest.approx(0.05)


def test_selection_score_formula() -> None:
    assert selection_score(0.5, 0.6, weight=0.5, min_delta=0.1) == pytest.approx(0.25)
    assert selection_score(0.5, 0.6) == pytest.approx(-0.1)
    # below min_delta (or negative): no bonus, never a penalty
    assert selection_score(0.5, 0.05, min_delta=0.1) == pytest.approx(0.5)
    assert selection_score(0.5, -0.8) == pytest.approx(0.5)
    assert selection_score(0.5, 0.6, use_spearman=False, weight=3.0) == pytest.approx(0.5)
    assert selection_score(0.5, float("nan"), weight=2.0) == pytest.approx(0.5)
    assert isinstance(selection_score(np.float32(0.5), 0.2), float)


def test_ema_seeds_then_decays() -> None:
    value = ema(None, 2.0, 0.9)
    assert value == 2.0
    value = ema(value, 4.0, 0.9)
    assert value == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)  # 2.2
    value = ema(value, 4.0, 0.9)
    assert value == pytest.approx(0.9 * 2.2 + 0.1 * 4.0)  # 2.38
    assert ema(3.0, 7.0, 0.0) == pytest.approx(7.0)


def test_correlations() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert pearson(a, a**3) < 0.99
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert isinstance(pearson(a, a), float)


@pytest.mark.parametrize("fn", [pearson, spearman])
def test_correlations_nan_for_constant_or_short_input(
    fn: Callable[[np.ndarray, np.ndarray], float],
) -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert math.isnan(fn(np.full(3, 0.5), a))
    assert math.isnan(fn(a, np.full(3, 0.5)))
    assert math.isnan(fn(np.array([1.0]), np.array([2.0])))
    assert math.isnan(fn(np.array([]), np.array([])))


# Tuning split by hand (top_k 1):
#   A pred [.9 .5 .1] true [.3 .8 .1]: top-1 true .3 -> regret .5, hit; ranks d^2 = 2 -> rho .5
#   B pred [.2 .6]    true [.5 .1]:    top-1 true .1 -> regret .4, miss; rho -1
#   C pred [.7 .3 .4] true [.1 .2 .15]: no decoy >= .23 (skipped for hits); regret .1; rho -1
#   |error| = .6 .3 0 .3 .5 .6 .1 .25 -> MAE 2.65 / 8
TUNE_PRED = np.array([0.9, 0.5, 0.1, 0.2, 0.6, 0.7, 0.3, 0.4])
TUNE_TRUE = np.array([0.3, 0.8, 0.1, 0.5, 0.1, 0.1, 0.2, 0.15])
TUNE_GROUPS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
TUNE_EXPECTED = {
    "tuning_rank_spearman": (0.5 - 1.0 - 1.0) / 3,
    "tuning_rank_regret": (0.5 + 0.4 + 0.1) / 3,
    "tuning_hit_rate_023": 0.5,
    "tuning_dockq_mae": 2.65 / 8,
}


def test_tuning_metrics_by_hand() -> None:
    out = tuning_metrics(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, top_k=1)
    assert out.keys() == TUNE_EXPECTED.keys()
    for name, value in TUNE_EXPECTED.items():
        assert out[name] == pytest.approx(value), name
    # top 2 reaches A's and B's good decoy: both hit
    assert tuning_metrics(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, top_k=2)[
        "tuning_hit_rate_023"
    ] == pytest.approx(1.0)


def test_tuning_metrics_use_the_val_definitions() -> None:
    val = split_metrics(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, hit_dockq=0.23, top_k=1)
    tuning = tuning_metrics(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, top_k=1)
    ranking = ranking_metrics(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, hit_dockq=0.23, top_k=1)
    assert tuning["tuning_rank_spearman"] == val["target_spearman"] == ranking["target_spearman"]
    assert tuning["tuning_rank_regret"] == val["regret"] == ranking["regret"]
    assert tuning["tuning_hit_rate_023"] == val["hit_rate"] == ranking["hit_rate"]
    assert tuning["tuning_dockq_mae"] == val["mae"]
    assert val["loss"] == pytest.approx(float(((TUNE_PRED - TUNE_TRUE) ** 2).mean()))


def test_ranking_groups_counts_targets_with_two_models() -> None:
    assert ranking_groups(TUNE_GROUPS) == 3
    assert ranking_groups(np.array(["A", "B", "B", "C"])) == 1
    assert ranking_groups(np.array([], dtype=int)) == 0


# --------------------------------------------------------------------------- shared definitions


def test_mse_and_mae_by_hand_for_arrays_and_tensors() -> None:
    pred, true = np.array([0.1, 0.5]), np.array([0.3, 0.2])
    assert mse(pred, true) == pytest.approx((0.04 + 0.09) / 2)
    assert mae(pred, true) == pytest.approx((0.2 + 0.3) / 2)
    assert mse(torch.tensor(pred, dtype=torch.float32), true) == pytest.approx(0.065)
    assert isinstance(mae(pred, true), float)
    with pytest.raises(ValueError, match="length"):
        mse(pred, true[:1])


# Target X (input order): pred [.9 .9 .5 .1], true [.3 .85 .6 .95]. Tie at .9: input order puts
#   the .3 model first -> top1 .3, best .95, ranking loss .65; top 2 = [.3, .85]:
#   hits >= .23: 2, >= .49: 1, >= .80: 1.
#   Spearman: pred ranks [3.5 3.5 2 1], true ranks [1 3 2 4]; centred dx [1 1 -.5 -1.5],
#   dy [-1.5 .5 -.5 1.5]: sum dxdy = -3, sum dx^2 = 4.5, sum dy^2 = 5 -> -3 / sqrt(22.5).
# Target Y: one model (pred .2, true .5): loss 0, hits 1/1/0, Spearman undefined.
HAND_PRED = np.array([0.9, 0.2, 0.9, 0.5, 0.1])
HAND_TRUE = np.array([0.3, 0.5, 0.85, 0.6, 0.95])
HAND_GROUPS = np.array(["X", "Y", "X", "X", "X"])


def test_per_target_table_by_hand() -> None:
    table = per_target_table(HAND_PRED, HAND_TRUE, HAND_GROUPS, top_k=2)
    assert list(table.columns) == [
        "TARGET",
        "n_models",
        "best_dockq",
        "top1_dockq",
        "ranking_loss",
        "hits_023",
        "hits_049",
        "hits_080",
        "spearman",
    ]
    x, y = table.to_dict("records")
    assert (x["TARGET"], x["n_models"], y["TARGET"], y["n_models"]) == ("X", 4, "Y", 1)
    assert (x["best_dockq"], x["top1_dockq"]) == (0.95, 0.3)
    assert x["ranking_loss"] == pytest.approx(0.65)
    assert (x["hits_023"], x["hits_049"], x["hits_080"]) == (2, 1, 1)
    assert x["spearman"] == pytest.approx(-3 / math.sqrt(22.5))
    assert (y["ranking_loss"], y["hits_023"], y["hits_049"], y["hits_080"]) == (0.0, 1, 1, 0)
    assert math.isnan(y["spearman"])
    # top 10 of a 4-model target is the whole target
    wide = per_target_table(HAND_PRED, HAND_TRUE, HAND_GROUPS).to_dict("records")[0]
    assert (wide["hits_023"], wide["hits_049"], wide["hits_080"]) == (4, 3, 2)
    assert hits_key(0.8) == "hits_080" and hits_key(0.23) == "hits_023"


def test_one_tie_break_for_training_and_predict() -> None:
    """Equal predictions keep input order: the rank predict writes, the top-1 pick behind the
    ranking loss and training's regret/hit rate all follow it."""
    assert list(ranks_within_targets(HAND_PRED, HAND_GROUPS)) == [1, 1, 2, 3, 4]
    swapped = np.array([2, 1, 0, 3, 4])  # the .85 model now comes first among the tied
    assert list(ranks_within_targets(HAND_PRED[swapped], HAND_GROUPS[swapped])) == [1, 1, 2, 3, 4]
    table = per_target_table(HAND_PRED[swapped], HAND_TRUE[swapped], HAND_GROUPS[swapped])
    assert table["ranking_loss"].iloc[0] == pytest.approx(0.1)
    out = ranking_metrics(HAND_PRED, HAND_TRUE, HAND_GROUPS, hit_dockq=0.8, top_k=1)
    assert out["regret"] == pytest.approx((0.65 + 0.0) / 2)
    assert out["hit_rate"] == 0.0  # X's top-1 (.3) misses; Y has no model >= .8 (skipped)
    assert ranking_metrics(HAND_PRED, HAND_TRUE, HAND_GROUPS, hit_dockq=0.8, top_k=2)[
        "hit_rate"
    ] == pytest.approx(1.0)


def test_percentile_interval_of_hand_picked_resamples() -> None:
    # targets' values .1 and .5; resamples AA, AB, BB, BA -> means .1 .3 .5 .3
    # np.quantile (linear) of sorted [.1 .3 .3 .5]: at 0.025 * 3 = .075 -> .1 + .075 * .2 = .115,
    # at 0.975 * 3 = 2.925 -> .3 + .925 * .2 = .485
    resamples = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
    low, high = bootstrap_mean(np.array([0.1, 0.5]), resamples)
    assert (low, high) == (pytest.approx(0.115), pytest.approx(0.485))
    assert percentile_interval(np.array([np.nan, 2.0, np.inf])) == (2.0, 2.0)
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan])))
    # NaN targets are skipped inside each resample, as in the point estimate
    three = np.array([[0, 0, 1], [2, 1, 2], [1, 1, 1], [0, 2, 1]])  # means .1 .5 nan .3
    low, high = bootstrap_mean(np.array([0.1, np.nan, 0.5]), three)
    assert (low, high) == (pytest.approx(0.1 + 0.05 * 0.2), pytest.approx(0.3 + 0.95 * 0.2))
    # one defined target is no interval
    assert all(math.isnan(v) for v in bootstrap_mean(np.array([0.1, np.nan]), resamples))


def test_bootstrap_over_three_targets_matches_exact_enumeration() -> None:
    """All 27 equally likely resamples of 3 targets: the mean is .2 with probability 1/27
    (> 2.5 %) and .9 with probability 1/27, so the exact 95 % percentile interval is [.2, .9];
    2000 seeded draws reproduce it exactly."""
    values = np.array([0.2, 0.5, 0.9])
    exact = np.sort([values[list(draw)].mean() for draw in np.ndindex(3, 3, 3)])
    cdf = np.arange(1, 28) / 27
    exact_low, exact_high = exact[np.argmax(cdf >= 0.025)], exact[np.argmax(cdf >= 0.975)]
    assert (exact_low, exact_high) == (pytest.approx(0.2), pytest.approx(0.9))
    resamples = resample_targets(3, 2000, seed=0)
    assert resamples.shape == (2000, 3)
    assert bootstrap_mean(values, resamples) == (pytest.approx(0.2), pytest.approx(0.9))
    assert values[resamples].mean() == pytest.approx(exact.mean(), abs=0.01)
    assert np.array_equal(resamples, resample_targets(3, 2000, seed=0))
    assert not np.array_equal(resamples, resample_targets(3, 2000, seed=1))


def test_pooled_bootstrap_resamples_whole_targets() -> None:
    # A = rows 0, 2 (pred 1, 3); B = row 1 (pred 8). Statistic: mean prediction over models.
    # AA -> mean(1, 3, 1, 3) = 2; AB -> mean(1, 3, 8) = 4; BB -> 8.
    # sorted [2 4 8]: 0.025 * 2 = .05 -> 2 + .05 * 2 = 2.1; 0.975 * 2 = 1.95 -> 4 + .95 * 4 = 7.8
    pred = np.array([1.0, 8.0, 3.0])
    groups = np.array(["A", "B", "A"])
    resamples = np.array([[0, 0], [0, 1], [1, 1]])
    low, high = bootstrap_pooled(lambda p, t: float(p.mean()), pred, pred, groups, resamples)
    assert (low, high) == (pytest.approx(2.1), pytest.approx(7.8))


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
