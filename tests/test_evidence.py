"""Paired comparisons over val targets: per-target analogues, bootstrap intervals checked by
hand, and the two decision rules (non-inferiority for FLT, superiority for final selection)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from graphqa.config import parse_params
from graphqa.data import PackedSplit
from graphqa.maths.evidence import (
    ANALOGUE,
    ANALOGUE_DIRECTION,
    Interval,
    analogue_of,
    better,
    mean_difference,
    non_inferior,
    per_target,
    relative_increase,
)
from graphqa.maths.metrics import mse, resample_targets
from graphqa.scoring import split_predictions
from graphqa.selection import DIRECTIONS

PRED = np.array([0.9, 0.2, 0.4, 0.5, 0.1])
TRUE = np.array([0.8, 0.0, 0.6, 0.7, 0.2])
GROUPS = np.array(["b", "a", "a", "b", "b"])


def test_every_rankable_metric_has_a_per_target_analogue() -> None:
    assert set(ANALOGUE) == set(DIRECTIONS)
    assert analogue_of("val_loss") == "squared_error"
    assert analogue_of("val_spearman") == "spearman"
    assert ANALOGUE_DIRECTION[analogue_of("selection_metric")] == "min"
    with pytest.raises(ValueError, match="val_accuracy"):
        analogue_of("val_accuracy")


def test_per_target_values_by_hand() -> None:
    targets, sq = per_target(PRED, TRUE, GROUPS, "squared_error")
    assert targets.tolist() == ["a", "b"]
    assert sq == pytest.approx([(0.2**2 + 0.2**2) / 2, (0.1**2 + 0.2**2 + 0.1**2) / 3])
    _, rho = per_target(PRED, TRUE, GROUPS, "spearman")
    assert rho == pytest.approx([1.0, 1.0])  # both targets ranked perfectly
    _, score = per_target(PRED, TRUE, GROUPS, "selection")
    assert score == pytest.approx(sq - 1.0)  # selection_score: loss - 1 * max(0, rho)
    cfg = parse_params({}, {"selection.spearman_weight": 0.5}).selection
    _, half = per_target(PRED, TRUE, GROUPS, "selection", cfg)
    assert half == pytest.approx(sq - 0.5)
    _, flat = per_target(np.full(5, 0.3), TRUE, GROUPS, "spearman")
    assert np.isnan(flat).all()  # constant predictions: undefined, not zero


def test_mean_difference_interval_by_hand() -> None:
    # Two targets with differences 0 and 1: a resample's mean is 0, 0.5 or 1 with probability
    # 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % quantiles are 0 and 1.
    resamples = resample_targets(2, 2000, seed=0)
    got = mean_difference(np.array([1.0, 3.0]), np.array([1.0, 2.0]), resamples)
    assert (got.estimate, got.low, got.high) == (0.5, 0.0, 1.0)
    # Seeds are averaged per target first; every seed pair here differs by 2 on each target.
    seeds = mean_difference(np.array([[1.0, 1.0], [3.0, 3.0]]), np.zeros((2, 2)), resamples)
    assert (seeds.estimate, seeds.low, seeds.high) == (2.0, 2.0, 2.0)


def test_mean_difference_skips_undefined_pairs_and_needs_two_targets() -> None:
    resamples = resample_targets(3, 500, seed=0)
    got = mean_difference(np.array([1.0, math.nan, 3.0]), np.zeros(3), resamples)
    assert got.estimate == 2.0 and 1.0 <= got.low <= got.high <= 3.0
    alone = mean_difference(np.array([1.0, math.nan, math.nan]), np.zeros(3), resamples)
    assert alone.estimate == 1.0 and math.isnan(alone.low) and math.isnan(alone.high)
    assert not better(alone, "max").adopted  # one target is no evidence
    with pytest.raises(ValueError, match="unpaired"):
        mean_difference(np.zeros((2, 3)), np.zeros((3, 3)), resamples)


def test_relative_increase_by_hand() -> None:
    # Reference loss 1 on both targets, candidate 1 and 2: (3 - 2) / 2 = 0.5 overall; resampled
    # (t0, t0) -> 0, (t0, t1) -> 0.5, (t1, t1) -> 1.
    resamples = resample_targets(2, 2000, seed=0)
    got = relative_increase(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]]), resamples)
    assert (got.estimate, got.low, got.high) == (0.5, 0.0, 1.0)
    one = relative_increase(np.array([2.0]), np.array([1.0]), resample_targets(1, 10))
    assert one.estimate == 1.0 and math.isnan(one.high)


def test_better_requires_the_interval_to_exclude_zero_on_the_better_side() -> None:
    assert better(Interval(-0.2, -0.3, -0.1), "min").adopted
    assert not better(Interval(-0.2, -0.3, 0.01), "min").adopted  # could be worse
    assert better(Interval(0.2, 0.1, 0.3), "max").adopted
    assert not better(Interval(0.2, -0.01, 0.3), "max").adopted
    assert not better(Interval(-0.2, -0.3, -0.1), "max").adopted  # clearly worse
    assert "upper bound < 0" in better(Interval(0.0, -1.0, 1.0), "min").reason


def test_non_inferior_reads_the_worst_end_of_each_interval() -> None:
    fine = non_inferior(Interval(0.0, -0.02, 0.009), Interval(0.0, -0.009, 0.02), 0.01, 0.01)
    assert fine.adopted and "not worse beyond the tolerances" in fine.reason
    assert not non_inferior(Interval(0.0, -0.02, 0.011), Interval(0, 0, 0), 0.01, 0.01).adopted
    assert not non_inferior(Interval(0, 0, 0), Interval(0.0, -0.011, 0.0), 0.01, 0.01).adopted
    nan = Interval(0.0, math.nan, math.nan)
    assert not non_inferior(nan, Interval(0, 0, 0), 0.01, 0.01).adopted


def test_split_predictions_reproduce_the_runs_val_loss(
    tiny_run: Path, tiny_schema_dir: Path
) -> None:
    """The evidence scores the very model training selected: its val predictions give the
    val_loss training logged for the best epoch."""
    summary = json.loads((tiny_run / "summary.json").read_text())
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    pred = split_predictions(tiny_run / summary["checkpoint"], val)
    assert pred.shape == (len(val),) and ((pred > 0) & (pred < 1)).all()
    assert mse(pred, val.y.numpy()) == pytest.approx(summary["metrics"]["val_loss"], abs=2e-6)
