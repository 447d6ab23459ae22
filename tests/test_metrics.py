"""Metric values computed by hand on tiny arrays."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from graphqa.metrics import ema, pearson, ranking_metrics, selection_score, spearman
from graphqa.train import pairwise_ranking_loss

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


def test_pairwise_ranking_loss_correct_order_is_zero() -> None:
    true = torch.tensor([0.8, 0.4, 0.2])
    group = torch.tensor([0, 0, 0])
    loss = pairwise_ranking_loss(torch.tensor([0.9, 0.5, 0.1]), true, group)
    assert loss.shape == ()
    assert loss.item() == 0.0
    # margin 0.5: pair diffs 0.4, 0.8, 0.4 -> relu(0.5 - d) = 0.1, 0, 0.1
    loss = pairwise_ranking_loss(torch.tensor([0.9, 0.5, 0.1]), true, group, margin=0.5)
    assert loss.item() == pytest.approx(0.2 / 3)


def test_pairwise_ranking_loss_reversed_is_positive() -> None:
    pred = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    loss = pairwise_ranking_loss(pred, torch.tensor([0.8, 0.4, 0.2]), torch.tensor([0, 0, 0]))
    # diffs pred_i - pred_j over true_i > true_j: -0.4, -0.8, -0.4
    assert loss.item() == pytest.approx(1.6 / 3)
    loss.backward()
    assert pred.grad is not None
    assert pred.grad.tolist() == pytest.approx([-2 / 3, 0.0, 2 / 3])


def test_pairwise_ranking_loss_ignores_cross_target_pairs() -> None:
    # within each target the order is right; across targets it is reversed
    pred = torch.tensor([0.2, 0.1, 0.9, 0.8])
    true = torch.tensor([0.9, 0.8, 0.2, 0.1])
    assert pairwise_ranking_loss(pred, true, torch.tensor([0, 0, 1, 1])).item() == 0.0
    assert pairwise_ranking_loss(pred, true, torch.tensor([0, 0, 0, 0])).item() > 0.0


def test_pairwise_ranking_loss_zero_without_valid_pairs() -> None:
    pred = torch.tensor([0.1, 0.9, 0.5])
    # every decoy its own target
    assert (
        pairwise_ranking_loss(pred, torch.tensor([0.9, 0.1, 0.3]), torch.tensor([0, 1, 2])).item()
        == 0.0
    )
    # equal labels give no ordered pair
    loss = pairwise_ranking_loss(pred, torch.full((3,), 0.4), torch.tensor([0, 0, 0]))
    assert loss.item() == 0.0
    assert torch.isfinite(loss)
