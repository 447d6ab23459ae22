"""Decisions by evidence: two models compared on the same val targets, with an interval.

Splits are by target, so targets are the independent units, a val split holds few of them and
the seed-to-seed spread of one recipe is often larger than the differences a point rule reads.
Every decision graphqa takes between models (FLT: is the smaller feature set not worse than the
unpruned one? final selection: does a fine-tune beat the sweep winner?) therefore

1. scores both models on the packed val split (:func:`graphqa.scoring.split_predictions`),
2. reduces each to one value per val target (:func:`per_target`: the per-target analogue of the
   metric that ranks models), pairs the two models target by target (and seed by seed), and
3. resamples *targets* with replacement (:func:`graphqa.maths.metrics.resample_targets`, the same
   resamples for every seed and every comparison of a decision) for a percentile interval of
   the difference (:func:`mean_difference`, :func:`relative_increase`).

A decision is then a statement about the interval, not the point estimate: FLT adopts a smaller
feature set only if the interval says it is not worse beyond a tolerance (:func:`non_inferior`),
final selection adopts a fine-tune only if the interval excludes zero in the better direction
(:func:`better`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from graphqa.maths.metrics import (
    BOOTSTRAP_LEVEL,
    bootstrap_mean,
    mse,
    percentile_interval,
    rounded,
    selection_score,
    spearman,
    target_members,
)

if TYPE_CHECKING:
    from graphqa.config import SelectionConfig

Analogue = Literal["squared_error", "spearman", "selection"]

#: Ranking metric -> its per-target analogue: the mean squared error over a target's models for
#: loss-like metrics, the Spearman within the target for ranking metrics, and for
#: ``selection_metric`` the same formula (:func:`graphqa.maths.metrics.selection_score`) on the
#: target's squared error and Spearman.
ANALOGUE: dict[str, Analogue] = {
    "selection_metric": "selection",
    "val_loss": "squared_error",
    "ema_val_loss": "squared_error",
    "val_mae": "squared_error",
    "tuning_dockq_mae": "squared_error",
    "val_spearman": "spearman",
    "val_pearson": "spearman",
    "val_target_spearman": "spearman",
    "val_regret": "spearman",
    "val_hit_rate": "spearman",
    "tuning_rank_spearman": "spearman",
    "tuning_rank_regret": "spearman",
    "tuning_hit_rate_023": "spearman",
}
#: Which way is better for each analogue.
ANALOGUE_DIRECTION: dict[Analogue, str] = {
    "squared_error": "min",
    "selection": "min",
    "spearman": "max",
}
#: Fewer val targets than this carry no interval, so no decision rests on them.
MIN_TARGETS = 2

ANALOGUE_LABEL: dict[Analogue, str] = {
    "squared_error": "per-target mean squared error",
    "spearman": "per-target Spearman",
    "selection": "per-target selection score (squared error - weight * Spearman)",
}


def analogue_of(metric: str) -> Analogue:
    """The per-target analogue a decision ranked by ``metric`` compares on."""
    try:
        return ANALOGUE[metric]
    except KeyError:
        raise ValueError(f"no per-target analogue for metric '{metric}'") from None


def per_target(
    pred: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    analogue: Analogue,
    selection: SelectionConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted targets and one value per target (NaN where undefined, e.g. the Spearman of a
    target with constant predictions). ``selection`` supplies the weights of the
    ``selection`` analogue (defaults: :func:`graphqa.maths.metrics.selection_score`'s)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    targets, members = target_members(groups)
    values = []
    for rows in members:
        p, t = pred[rows], true[rows]
        if analogue == "squared_error":
            values.append(mse(p, t))
        elif analogue == "spearman":
            values.append(spearman(p, t))
        elif analogue == "selection":
            kwargs: dict[str, Any] = {}
            if selection is not None:
                kwargs = {
                    "use_spearman": selection.use_val_spearman,
                    "weight": selection.spearman_weight,
                    "min_delta": selection.spearman_min_delta,
                }
            values.append(selection_score(mse(p, t), spearman(p, t), **kwargs))
        else:
            raise ValueError(f"unknown per-target analogue '{analogue}'")
    return targets, np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class Interval:
    """A point estimate over all targets and its bootstrap interval over targets."""

    estimate: float
    low: float
    high: float

    def to_json(self) -> dict[str, Any]:
        return {
            "estimate": rounded(self.estimate, 8),
            "ci": [rounded(self.low, 8), rounded(self.high, 8)],
        }


def _seed_by_target(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2:
        raise ValueError(f"expected [seeds, targets] values, got shape {values.shape}")
    return values


def mean_difference(
    candidate: np.ndarray,
    reference: np.ndarray,
    resamples: np.ndarray,
    level: float = BOOTSTRAP_LEVEL,
) -> Interval:
    """Mean over targets of ``candidate - reference``, averaged over seeds first.

    Both are ``[seeds, targets]`` (or ``[targets]`` for one seed), paired by position: row
    ``s`` of both comes from seed ``s``, column ``t`` from target ``t``. A pair with a NaN side
    is skipped; a target without any defined pair is skipped. ``resamples`` are target indices
    (:func:`graphqa.maths.metrics.resample_targets`). Fewer than :data:`MIN_TARGETS` defined targets
    give no interval (NaN bounds: one target's resamples are all alike, not certain).
    """
    cand, ref = _seed_by_target(candidate), _seed_by_target(reference)
    if cand.shape != ref.shape:
        raise ValueError(f"unpaired values: {cand.shape} vs {ref.shape}")
    with warnings.catch_warnings():  # all-NaN targets/resamples are NaN, then skipped
        warnings.simplefilter("ignore", RuntimeWarning)
        per_target_diff = np.nanmean(cand - ref, axis=0)
        estimate = float(np.nanmean(per_target_diff))
    if np.isfinite(per_target_diff).sum() < MIN_TARGETS:
        return Interval(estimate, math.nan, math.nan)
    low, high = bootstrap_mean(per_target_diff, resamples, level)
    return Interval(estimate, low, high)


def relative_increase(
    candidate: np.ndarray,
    reference: np.ndarray,
    resamples: np.ndarray,
    level: float = BOOTSTRAP_LEVEL,
) -> Interval:
    """``(sum candidate - sum reference) / sum reference`` over seeds and targets: the relative
    change of a per-target loss (target-weighted), with targets resampled for the interval.
    Values must be finite (a per-target loss always is); fewer than :data:`MIN_TARGETS`
    targets give no interval."""
    cand, ref = _seed_by_target(candidate), _seed_by_target(reference)
    if cand.shape != ref.shape:
        raise ValueError(f"unpaired values: {cand.shape} vs {ref.shape}")
    if not (np.isfinite(cand).all() and np.isfinite(ref).all()):
        raise ValueError("relative_increase needs finite per-target losses")
    cand_t, ref_t = cand.sum(axis=0), ref.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = float((cand_t.sum() - ref_t.sum()) / ref_t.sum())
        if len(ref_t) < MIN_TARGETS:
            return Interval(estimate, math.nan, math.nan)
        drawn_ref = ref_t[resamples].sum(axis=1)
        stats = (cand_t[resamples].sum(axis=1) - drawn_ref) / drawn_ref
    low, high = percentile_interval(stats, level)
    return Interval(estimate, low, high)


@dataclass(frozen=True)
class Verdict:
    """An adopt-or-not decision with the reason, as written into the stages' reports.

    Attributes:
        adopted: whether the evidence supports adopting the candidate.
        reason: the readable why, intervals and tolerances included.
    """

    adopted: bool
    reason: str


def _signed(value: float) -> str:
    return f"{value:+.4g}" if math.isfinite(value) else "n/a"


def _ci(interval: Interval) -> str:
    return f"[{_signed(interval.low)}, {_signed(interval.high)}]"


def non_inferior(
    loss: Interval,
    spearman_diff: Interval,
    loss_tolerance: float,
    spearman_tolerance: float,
) -> Verdict:
    """One-sided non-inferiority: adopted only if the interval's worst case is within both
    tolerances: relative loss increase ``high <= loss_tolerance`` and Spearman difference
    ``low >= -spearman_tolerance``. An undefined interval (NaN) is not evidence."""
    loss_ok = math.isfinite(loss.high) and loss.high <= loss_tolerance
    rho_ok = math.isfinite(spearman_diff.low) and spearman_diff.low >= -spearman_tolerance
    parts = [
        f"relative val loss change {_signed(loss.estimate)} {_ci(loss)} "
        f"{'<=' if loss_ok else 'not <='} {loss_tolerance:g} at the upper bound",
        f"per-target Spearman change {_signed(spearman_diff.estimate)} {_ci(spearman_diff)} "
        f"{'>=' if rho_ok else 'not >='} {-spearman_tolerance:g} at the lower bound",
    ]
    adopted = loss_ok and rho_ok
    verdict = "not worse beyond the tolerances" if adopted else "not shown to be non-inferior"
    return Verdict(adopted, f"{verdict}: " + "; ".join(parts))


def better(diff: Interval, direction: str) -> Verdict:
    """Superiority: adopted only if the interval of ``candidate - reference`` excludes zero on
    the better side (``high < 0`` when lower is better, ``low > 0`` when higher is)."""
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    if direction == "min":
        adopted = math.isfinite(diff.high) and diff.high < 0
        side = "upper bound < 0"
    else:
        adopted = math.isfinite(diff.low) and diff.low > 0
        side = "lower bound > 0"
    what = "better beyond the noise" if adopted else "not better beyond the noise"
    return Verdict(
        adopted, f"{what}: difference {_signed(diff.estimate)} {_ci(diff)} ({side} required)"
    )
