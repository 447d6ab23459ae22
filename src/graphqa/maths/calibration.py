"""Post-hoc calibration of predicted DockQ: rescaling, thresholds and uncertainty intervals.

The network is trained for ranking as much as for regression, so ``sigmoid(logit)`` need not
match the observed DockQ. Everything here is fitted on a held-out calibration split and is a
pure function of numpy arrays (float64): temperature scaling (a monotone map, so it keeps the
ranking), isotonic regression, a decision threshold for "acceptable" models (DockQ >= 0.23) and
target-grouped conformal intervals. Reliability diagnostics (ECE) live in
:mod:`graphqa.maths.metrics` with every other metric. The stage that fits all this on val_calib
is :mod:`graphqa.calibration`.

Intervals: splits are by target, so a new target is the exchangeable unit, not a new model. The
interval ``pred ± q · s(pred)`` uses a difficulty scale ``s`` known at predict time and a
quantile ``q`` taken over calibration *targets* (each weighted equally, plus one worst-case
slot for the new target), which gives a finite-sample guarantee for the expected coverage of a
new target's models (see :func:`grouped_conformal_quantile`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

from graphqa.maths.metrics import mse, reliability_curve, target_members

# Slack when comparing criterion values: MCC ties equal in exact arithmetic can differ by an ulp.
_TIE_ATOL = 1e-12


def _vector(name: str, a: np.ndarray) -> np.ndarray:
    out = np.asarray(a, dtype=np.float64)
    if out.ndim != 1 or out.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _pair(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a_name, a), _vector(b_name, b)
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} differ in length: {a.size} != {b.size}")
    return a, b


def _unit(name: str, a: np.ndarray) -> np.ndarray:
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1]")
    return a


# --------------------------------------------------------------------------- temperature


@dataclass(frozen=True)
class TemperatureScaling:
    """``sigmoid(logit / temperature + bias)``; with ``bias == 0`` the ranking is unchanged."""

    temperature: float
    bias: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not math.isfinite(self.bias):
            raise ValueError(f"bias must be finite, got {self.bias}")

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature + self.bias)

    def to_dict(self) -> dict[str, float]:
        return {"temperature": float(self.temperature), "bias": float(self.bias)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TemperatureScaling:
        return cls(temperature=float(d["temperature"]), bias=float(d["bias"]))


def _temperature_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    log_t: torch.Tensor,
    bias: torch.Tensor,
    loss: str,
) -> torch.Tensor:
    z = logits / torch.exp(log_t) + bias
    if loss == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(z, labels)
    return torch.mean((torch.sigmoid(z) - labels) ** 2)


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    fit_bias: bool = False,
    loss: Literal["bce", "mse"] = "bce",
) -> tuple[TemperatureScaling, dict[str, Any]]:
    """Fit ``T`` (and optionally ``b``) of ``sigmoid(logit / T + b)`` to DockQ labels in [0, 1].

    BCE uses the labels as soft targets, so it is minimised where the calibrated probability
    equals the label. ``T = exp(log_t)`` keeps the temperature positive without constraints.
    LBFGS (strong Wolfe line search) in float64 from the identity ``T = 1, b = 0``; no
    randomness, so identical inputs give bit-identical results. Should the optimiser return a
    non-finite or worse solution, the identity is kept and the report says ``fallback``.
    """
    if loss not in ("bce", "mse"):
        raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")
    logits, labels = _pair("logits", logits, "labels", labels)
    _unit("labels", labels)
    x = torch.from_numpy(logits.copy())
    y = torch.from_numpy(labels.copy())
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=fit_bias)
    params = [log_t, bias] if fit_bias else [log_t]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        value = _temperature_loss(x, y, log_t, bias, loss)
        value.backward()
        return value

    with torch.no_grad():
        zero = torch.zeros((), dtype=torch.float64)
        loss_before = float(_temperature_loss(x, y, zero, zero, loss))
    optimizer.step(closure)
    with torch.no_grad():
        loss_after = float(_temperature_loss(x, y, log_t, bias, loss))
    temperature, b = math.exp(log_t.item()), bias.item()

    fallback = not (
        math.isfinite(loss_after)
        and math.isfinite(b)
        and 0.0 < temperature < math.inf
        and loss_after <= loss_before
    )
    if fallback:
        temperature, b, loss_after = 1.0, 0.0, loss_before
    report = {
        "loss": loss,
        "loss_before": loss_before,
        "loss_after": loss_after,
        "temperature": temperature,
        "bias": b,
        "n": int(logits.size),
        "evaluations": evaluations,
        "fallback": fallback,
    }
    return TemperatureScaling(temperature=temperature, bias=b), report


# --------------------------------------------------------------------------- isotonic


@dataclass(frozen=True)
class IsotonicCalibration:
    """Monotone piecewise-linear map through the fitted thresholds, constant outside them.

    Stores only sklearn's ``X_thresholds_``/``y_thresholds_`` so it serialises to JSON;
    ``apply`` reproduces ``IsotonicRegression.predict`` with ``out_of_bounds="clip"``.
    """

    x: list[float]
    y: list[float]

    def __post_init__(self) -> None:
        if len(self.x) == 0 or len(self.x) != len(self.y):
            raise ValueError("x and y must be non-empty and of equal length")
        if np.any(np.diff(np.asarray(self.x, dtype=np.float64)) < 0):
            raise ValueError("x must be non-decreasing")

    def apply(self, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float64)
        return np.interp(p, np.asarray(self.x, np.float64), np.asarray(self.y, np.float64))

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IsotonicCalibration:
        return cls(x=[float(v) for v in d["x"]], y=[float(v) for v in d["y"]])


def fit_isotonic(
    probs: np.ndarray, labels: np.ndarray
) -> tuple[IsotonicCalibration, dict[str, Any]]:
    """Increasing isotonic fit of labels on probabilities, outputs bounded to [0, 1].

    More flexible than temperature scaling (fixes any monotone distortion) but it can merge
    distinct scores into ties, which costs ranking resolution. Losses are MSE.
    """
    probs, labels = _pair("probs", probs, "labels", labels)
    _unit("labels", labels)
    reg = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    reg.fit(probs, labels)
    cal = IsotonicCalibration(
        x=[float(v) for v in reg.X_thresholds_], y=[float(v) for v in reg.y_thresholds_]
    )
    report = {
        "loss": "mse",
        "loss_before": mse(probs, labels),
        "loss_after": mse(cal.apply(probs), labels),
        "n": int(probs.size),
        "n_thresholds": len(cal.x),
    }
    return cal, report


# --------------------------------------------------------------------------- threshold


def _confusion_at(
    scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn, tn) per threshold for the rule ``score >= threshold``, in O(n log n)."""
    pos = np.sort(scores[positive])
    neg = np.sort(scores[~positive])
    tp = (pos.size - np.searchsorted(pos, thresholds, side="left")).astype(np.float64)
    fp = (neg.size - np.searchsorted(neg, thresholds, side="left")).astype(np.float64)
    return tp, fp, pos.size - tp, neg.size - fp


def _criterion_values(
    criterion: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> np.ndarray:
    """F1 or MCC per threshold; 0 where undefined (the ``zero_division=0`` convention)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if criterion == "f1":
            den = 2 * tp + fp + fn
            value = np.where(den > 0, 2 * tp / den, 0.0)
        else:
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            value = np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)
    return value


def threshold_sweep(
    scores: np.ndarray,
    labels: np.ndarray,
    positive_at: float = 0.23,
    criterion: Literal["f1", "mcc"] = "f1",
    grid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Decision threshold on ``scores`` that best separates ``labels >= positive_at``.

    A model is predicted positive when ``score >= threshold``. Candidates are the unique
    scores (every distinct decision rule) plus ``grid``; the best criterion wins and ties go to
    the lowest threshold (values within 1e-12 count as tied). The sweep uses vectorised
    confusion counts so it stays O(n log n); the reported precision/recall/F1/MCC at the chosen
    threshold come from ``sklearn.metrics`` (``zero_division=0``; MCC is 0 when undefined).
    With no positives (or no negatives, for MCC) every candidate scores 0 and the lowest one
    wins, so check ``positives`` before trusting the threshold.
    """
    if criterion not in ("f1", "mcc"):
        raise ValueError(f"criterion must be 'f1' or 'mcc', got {criterion!r}")
    scores, labels = _pair("scores", scores, "labels", labels)
    positive = labels >= positive_at
    candidates = np.unique(scores)
    if grid is not None:
        candidates = np.union1d(candidates, _vector("grid", grid))
    values = _criterion_values(criterion, *_confusion_at(scores, positive, candidates))
    best = int(np.flatnonzero(values >= values.max() - _TIE_ATOL)[0])
    threshold = float(candidates[best])

    y_true, y_pred = positive.astype(int), (scores >= threshold).astype(int)
    with warnings.catch_warnings():  # one-class splits are legitimate; values are 0 there
        warnings.simplefilter("ignore", UserWarning)
        f1 = float(f1_score(y_true, y_pred, zero_division=0))
        mcc = float(matthews_corrcoef(y_true, y_pred))
        precision = float(precision_score(y_true, y_pred, zero_division=0))
        recall = float(recall_score(y_true, y_pred, zero_division=0))
    return {
        "threshold": threshold,
        "criterion": criterion,
        "value": f1 if criterion == "f1" else mcc,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mcc": mcc,
        "positives": int(y_true.sum()),
        "predicted_positives": int(y_pred.sum()),
        "n": int(scores.size),
    }


# --------------------------------------------------------------------------- conformal

#: Difficulty scales ``s(pred)`` of the interval ``pred ± q · s``; all known at predict time.
#: ``none``: constant width. ``pvar``: ``sqrt(p (1 - p))``, since DockQ is bounded and models
#: predicted near 0 (most decoys) err least. ``target_spread``: the standard deviation of the
#: calibrated predictions within the model's target (needs the target's models scored together).
IntervalScale = Literal["none", "pvar", "target_spread"]
INTERVAL_SCALES: tuple[str, ...] = ("none", "pvar", "target_spread")
#: Default scale, picked on evidence: fitted on the pipeline's val_calib predictions and
#: applied to its test targets it gave the narrowest intervals at equal held-out coverage (mean
#: width 0.34 vs 0.39 ``none`` and 0.37 ``target_spread`` at 80 %; the same order over random
#: target splits). Validity does not depend on the choice (tests/test_calibrate.py checks all).
DEFAULT_INTERVAL_SCALE = "pvar"
#: Added to every scale so no interval collapses to a point (p = 0 or 1, a lone model).
SCALE_FLOOR = 0.05
#: DockQ bands (CAPRI incorrect / acceptable / medium / high) for coverage reports.
DOCKQ_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<0.23", -math.inf, 0.23),
    ("0.23-0.49", 0.23, 0.49),
    ("0.49-0.80", 0.49, 0.80),
    (">=0.80", 0.80, math.inf),
)


def difficulty_scale(
    pred: np.ndarray,
    groups: np.ndarray,
    scale: str = DEFAULT_INTERVAL_SCALE,
    floor: float = SCALE_FLOOR,
) -> np.ndarray:
    """Per-model scale ``s > 0`` of the interval; a function of predictions and targets only,
    so calibration targets stay exchangeable with new ones."""
    if scale not in INTERVAL_SCALES:
        raise ValueError(f"scale must be one of {INTERVAL_SCALES}, got {scale!r}")
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be finite and > 0, got {floor}")
    pred = _vector("pred", pred)
    groups = np.asarray(groups)
    if groups.shape != pred.shape:
        raise ValueError(f"pred and groups differ in length: {pred.size} != {groups.size}")
    if scale == "none":
        return np.ones_like(pred)
    if scale == "pvar":
        p = np.clip(pred, 0.0, 1.0)
        return np.sqrt(p * (1.0 - p)) + floor
    out = np.empty_like(pred)
    for rows in target_members(groups)[1]:
        out[rows] = pred[rows].std() + floor
    return out


def min_calibration_targets(coverage: float) -> int:
    """Fewest calibration targets for which a finite target-grouped quantile exists."""
    return math.ceil(coverage / (1.0 - coverage) - 1e-9)


def grouped_conformal_quantile(
    scores: np.ndarray, groups: np.ndarray, coverage: float = 0.9
) -> tuple[float, bool]:
    """Smallest ``q`` with ``sum_j F_j(q) >= (m + 1) * coverage`` over the ``m`` calibration
    targets, ``F_j`` being the fraction of target ``j``'s scores ``<= q``; and whether it exists.

    Why it holds: add the new target as ``j = m + 1``. The same rule applied to all ``m + 1``
    targets (a symmetric function of them) gives ``q* <= q``, because our sum leaves out
    ``F_{m+1} <= 1``. Targets are exchangeable, so ``E[F_{m+1}(q*)]`` is the mean of all
    ``F_j(q*)``, which is ``>= coverage``; ``F_{m+1}`` is non-decreasing, hence
    ``E[F_{m+1}(q)] >= coverage``: a model drawn at random from a new target is covered with
    probability >= coverage, every target weighted equally whatever its number of models.
    With one model per target this is exactly split conformal (the ``ceil((n + 1) coverage)``-th
    smallest score). Fewer than :func:`min_calibration_targets` targets: no finite ``q`` exists;
    the largest score is returned with ``False`` (no guarantee). ``(m + 1) * coverage`` gets a
    1e-9 slack so float error does not cost a rank.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    scores = _vector("scores", scores)
    groups = np.asarray(groups)
    if groups.shape != scores.shape:
        raise ValueError(f"scores and groups differ in length: {scores.size} != {groups.size}")
    _, codes, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.argsort(scores, kind="stable")
    mass = np.cumsum(1.0 / counts[codes[order]])  # sum_j F_j(score) after each sorted score
    need = (len(counts) + 1) * coverage - 1e-9
    if mass[-1] < need:
        return float(scores.max()), False
    return float(scores[order][int(np.searchsorted(mass, need, side="left"))]), True


def conformal_half_width(pred: np.ndarray, labels: np.ndarray, coverage: float = 0.9) -> float:
    """Plain split-conformal half-width: every model its own group (models exchangeable).

    ``q`` is the ``k``-th smallest absolute residual, ``k = ceil((n + 1) * coverage)`` (the
    order statistic, ``np.quantile(method="inverted_cdf")`` at ``k / n``). When ``k > n`` the
    largest residual is returned and the coverage is *not* guaranteed. Kept as the reference
    that target-grouped intervals are compared with (it under-covers new targets).
    """
    pred, labels = _pair("pred", pred, "labels", labels)
    residuals = np.abs(labels - pred)
    return grouped_conformal_quantile(residuals, np.arange(residuals.size), coverage)[0]


@dataclass(frozen=True)
class ConformalInterval:
    """``clip(pred ± quantile · difficulty_scale(pred), 0, 1)`` and what it guarantees.

    ``method`` is ``target_grouped`` (:func:`fit_conformal_interval`) or ``split`` (a bundle
    written before target-grouped intervals: a constant half-width over exchangeable models).
    """

    coverage: float
    quantile: float
    scale: str = "none"
    floor: float = SCALE_FLOOR
    method: str = "target_grouped"
    n_targets: int = 0
    n: int = 0
    guaranteed: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {self.coverage}")
        if not (math.isfinite(self.quantile) and self.quantile >= 0):
            raise ValueError(f"quantile must be finite and >= 0, got {self.quantile}")
        if self.scale not in INTERVAL_SCALES:
            raise ValueError(f"scale must be one of {INTERVAL_SCALES}, got {self.scale!r}")
        if self.method not in ("target_grouped", "split"):
            raise ValueError(f"method must be 'target_grouped' or 'split', got {self.method!r}")

    def half_widths(self, pred: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return self.quantile * difficulty_scale(pred, groups, self.scale, self.floor)

    def bounds(self, pred: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interval ends clipped to [0, 1] (clipping never changes coverage of DockQ labels)."""
        pred = _vector("pred", pred)
        half = self.half_widths(pred, groups)
        return np.clip(pred - half, 0.0, 1.0), np.clip(pred + half, 0.0, 1.0)

    def guarantee(self) -> str:
        """What the interval promises, in one sentence for metrics.json and the README."""
        c = f"{self.coverage:.0%}"
        if self.method == "split":
            return (
                f"{c} coverage only for models exchangeable with the calibration models "
                "(plain split conformal); nothing across targets"
            )
        if not self.guaranteed:
            return (
                f"none: a target-grouped {c} interval needs >= "
                f"{min_calibration_targets(self.coverage)} val_calib targets, got "
                f"{self.n_targets}; the widest calibration residual is used instead"
            )
        return (
            f"{c} expected coverage of the models of a new target exchangeable with the "
            f"{self.n_targets} val_calib targets (target-grouped conformal, targets weighted "
            "equally); not per target, not per DockQ band, not under a shift in the targets"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "coverage": float(self.coverage),
            "quantile": float(self.quantile),
            "scale": self.scale,
            "floor": float(self.floor),
            "n_targets": int(self.n_targets),
            "n": int(self.n),
            "guaranteed": bool(self.guaranteed),
            "guarantee": self.guarantee(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformalInterval:
        """Also reads the old ``{"coverage", "half_width"}`` form as a ``split`` interval."""
        if "quantile" not in d:
            return cls(
                coverage=float(d["coverage"]),
                quantile=float(d["half_width"]),
                scale="none",
                method="split",
            )
        return cls(
            coverage=float(d["coverage"]),
            quantile=float(d["quantile"]),
            scale=str(d["scale"]),
            floor=float(d["floor"]),
            method=str(d["method"]),
            n_targets=int(d["n_targets"]),
            n=int(d["n"]),
            guaranteed=bool(d["guaranteed"]),
        )


def fit_conformal_interval(
    pred: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    coverage: float = 0.9,
    scale: str = DEFAULT_INTERVAL_SCALE,
    floor: float = SCALE_FLOOR,
) -> ConformalInterval:
    """Target-grouped conformal interval on a calibration split (normalised residuals
    ``|label - pred| / s``, quantile over targets by :func:`grouped_conformal_quantile`)."""
    pred, labels = _pair("pred", pred, "labels", labels)
    s = difficulty_scale(pred, groups, scale, floor)
    quantile, guaranteed = grouped_conformal_quantile(np.abs(labels - pred) / s, groups, coverage)
    return ConformalInterval(
        coverage=coverage,
        quantile=quantile,
        scale=scale,
        floor=floor,
        n_targets=len(np.unique(np.asarray(groups))),
        n=int(pred.size),
        guaranteed=guaranteed,
    )


def interval_coverage(
    pred: np.ndarray, labels: np.ndarray, half_width: float | np.ndarray
) -> dict[str, float]:
    """Empirical coverage and mean width of ``[pred - h, pred + h]`` clipped to [0, 1].

    ``half_width`` is one number or one per model. Clipping never changes coverage of labels in
    [0, 1]; it only makes the reported width the width a user actually sees:
    ``min(1, p + h) - max(0, p - h)``.
    """
    half = np.asarray(half_width, dtype=np.float64)
    if not (np.isfinite(half).all() and (half >= 0).all()):
        raise ValueError(f"half_width must be finite and >= 0, got {half_width}")
    pred, labels = _pair("pred", pred, "labels", labels)
    _unit("pred", pred)
    lo, hi = np.maximum(0.0, pred - half), np.minimum(1.0, pred + half)
    covered = (labels >= lo) & (labels <= hi)
    return {
        "coverage": float(covered.mean()),
        "mean_width": float(np.mean(hi - lo)),
        "n": int(pred.size),
    }


def coverage_by_band(
    pred: np.ndarray, labels: np.ndarray, half_widths: np.ndarray, groups: np.ndarray
) -> list[dict[str, Any]]:
    """Coverage over all models and per true-DockQ band (:data:`DOCKQ_BANDS`).

    ``coverage`` pools models; ``coverage_target_mean`` averages per-target coverage (targets
    weighted equally: the quantity a target-grouped interval guarantees, for ``all`` only).
    """
    pred, labels = _pair("pred", pred, "labels", labels)
    half = np.broadcast_to(np.asarray(half_widths, dtype=np.float64), pred.shape)
    groups = np.asarray(groups)
    lo, hi = np.maximum(0.0, pred - half), np.minimum(1.0, pred + half)
    covered = (labels >= lo) & (labels <= hi)
    rows = []
    for band, low, high in (("all", -math.inf, math.inf), *DOCKQ_BANDS):
        sel = (labels >= low) & (labels < high)
        if not sel.any():
            rows.append({"band": band, "n_models": 0, "n_targets": 0})
            continue
        covered_sel = covered[sel]
        per_target = [covered_sel[members].mean() for members in target_members(groups[sel])[1]]
        rows.append(
            {
                "band": band,
                "n_models": int(sel.sum()),
                "n_targets": len(per_target),
                "coverage": float(covered_sel.mean()),
                "coverage_target_mean": float(np.mean(per_target)),
                "mean_width": float(np.mean((hi - lo)[sel])),
            }
        )
    return rows


def reliability_rows(
    raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, bins: int
) -> list[dict[str, Any]]:
    """The reliability table of a split before and after calibration (``reliability.csv``).

    Args:
        raw: uncalibrated scores in [0, 1].
        calibrated: the same graphs' calibrated scores.
        labels: their DockQ.
        bins: equal-width probability bins.

    Returns:
        One row per bin of :func:`graphqa.maths.metrics.reliability_curve`, raw bins first,
        each tagged ``calibration: raw | calibrated``.
    """
    rows = [{"calibration": "raw", **r} for r in reliability_curve(raw, labels, bins)]
    rows += [
        {"calibration": "calibrated", **r} for r in reliability_curve(calibrated, labels, bins)
    ]
    return rows
