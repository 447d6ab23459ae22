"""Post-hoc calibration of predicted DockQ: rescaling, thresholds and uncertainty intervals.

The network is trained for ranking as much as for regression, so ``sigmoid(logit)`` need not
match the observed DockQ. Everything here is fitted on a held-out calibration split and is a
pure function of numpy arrays (float64): temperature scaling (a monotone map, so it keeps the
ranking), isotonic regression, a decision threshold for "acceptable" models (DockQ >= 0.23),
split-conformal intervals and reliability diagnostics.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

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


def _mse(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((pred - labels) ** 2))


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
        "loss_before": _mse(probs, labels),
        "loss_after": _mse(cal.apply(probs), labels),
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


def conformal_half_width(pred: np.ndarray, labels: np.ndarray, coverage: float = 0.9) -> float:
    """Split-conformal half-width ``q`` so that ``|label - pred| <= q`` with prob >= coverage.

    ``q`` is the ``k``-th smallest absolute residual, ``k = ceil((n + 1) * coverage)``: the
    ``k / n`` empirical quantile (the order statistic itself, i.e. ``np.quantile`` with
    ``method="inverted_cdf"``; ``method="higher"`` would return the ``(k+1)``-th for ``k < n``,
    one rank wider than needed). ``(n + 1) * coverage`` is rounded up with a 1e-9 slack so that
    float error (e.g. ``25 * 0.28 = 7.000000000000001``) does not cost a rank. When ``k > n``
    the calibration set is too small for the guarantee (the exact answer is an infinite
    interval); the largest residual is returned instead, so the coverage is then *not*
    guaranteed.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    pred, labels = _pair("pred", pred, "labels", labels)
    residuals = np.abs(labels - pred)
    n = residuals.size
    k = math.ceil((n + 1) * coverage - 1e-9)
    if k > n:
        return float(residuals.max())
    return float(np.partition(residuals, k - 1)[k - 1])


def interval_coverage(pred: np.ndarray, labels: np.ndarray, half_width: float) -> dict[str, float]:
    """Empirical coverage and mean width of ``[pred - h, pred + h]`` clipped to [0, 1].

    Clipping never changes coverage of labels in [0, 1]; it only makes the reported width the
    width a user actually sees: ``min(1, p + h) - max(0, p - h)``.
    """
    if not (math.isfinite(half_width) and half_width >= 0):
        raise ValueError(f"half_width must be finite and >= 0, got {half_width}")
    pred, labels = _pair("pred", pred, "labels", labels)
    _unit("pred", pred)
    lo, hi = np.maximum(0.0, pred - half_width), np.minimum(1.0, pred + half_width)
    covered = (labels >= lo) & (labels <= hi)
    return {
        "coverage": float(covered.mean()),
        "mean_width": float(np.mean(hi - lo)),
        "n": int(pred.size),
    }


# --------------------------------------------------------------------------- reliability


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean prediction vs mean observed DockQ in equal-width bins over [0, 1].

    Bin ``i`` is ``[i / bins, (i + 1) / bins)``, the last one closed so 1.0 is counted. Empty
    bins are skipped. Labels may be continuous, so ``mean_observed`` is a mean DockQ rather
    than a positive rate.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs, labels = _pair("probs", probs, "labels", labels)
    _unit("probs", probs)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        sel = idx == i
        count = int(sel.sum())
        if count == 0:
            continue
        out.append(
            {
                "bin_lower": float(edges[i]),
                "bin_upper": float(edges[i + 1]),
                "count": count,
                "mean_predicted": float(probs[sel].mean()),
                "mean_observed": float(labels[sel].mean()),
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """``sum_bins count / n * |mean_predicted - mean_observed|`` (regression ECE)."""
    curve = reliability_curve(probs, labels, bins)
    n = sum(b["count"] for b in curve)
    return float(sum(b["count"] / n * abs(b["mean_predicted"] - b["mean_observed"]) for b in curve))


# --------------------------------------------------------------------------- stage worker


def calibrate_final(
    *, cfg: Any, model_path: str | Path, schema_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage ``calibration``: predict val_calib once, fit both calibrators, apply the chosen
    one, tune the acceptable-model threshold and the conformal half-width on it."""
    import pandas as pd

    from graphqa.contract import write_json
    from graphqa.data import PackedSplit
    from graphqa.scoring import packed_logits
    from graphqa.train import load_module

    split = PackedSplit.load(Path(schema_dir) / "packed" / "val_calib.pt")
    logits = packed_logits(load_module(model_path).net, split).numpy()
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
    half = conformal_half_width(scores, labels, cfg.coverage)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = {
        "method": cfg.method,
        "split": "val_calib",
        "n": len(labels),
        "temperature": temperature.to_dict(),
        "isotonic": isotonic.to_dict(),
        "fit": {"temperature": temperature_fit, "isotonic": isotonic_fit},
        "conformal": {"coverage": cfg.coverage, "half_width": half},
    }
    write_json(out / "calibration.json", calibration)
    write_json(out / "thresholds.json", {"acceptable_dockq": cfg.acceptable_dockq, **sweep})
    pd.DataFrame(
        {
            "MODEL": split.models,
            "TARGET": split.targets,
            "dockq": labels,
            "logit": logits,
            "pred_raw": raw,
            "pred_calibrated": scores,
        }
    ).to_csv(out / "val_calib_predictions.csv", index=False, float_format="%.6f")
    rows = [
        {"calibration": "raw", **r} for r in reliability_curve(raw, labels, cfg.reliability_bins)
    ]
    rows += [
        {"calibration": "calibrated", **r}
        for r in reliability_curve(scores, labels, cfg.reliability_bins)
    ]
    pd.DataFrame(rows).to_csv(out / "reliability.csv", index=False, float_format="%.6f")
    metrics = {
        "calib_ece_raw": expected_calibration_error(raw, labels, cfg.reliability_bins),
        "calib_ece_calibrated": expected_calibration_error(scores, labels, cfg.reliability_bins),
        "acceptable_threshold": sweep["threshold"],
        f"acceptable_{cfg.threshold_criterion}": sweep["value"],
        "interval_half_width": half,
    }
    write_json(out / "metrics.json", {k: round(float(v), 6) for k, v in metrics.items()})
    print(
        f"calibration: {cfg.method}; ECE {metrics['calib_ece_raw']:.4f} -> "
        f"{metrics['calib_ece_calibrated']:.4f}; threshold {sweep['threshold']:.3f}; "
        f"±{half:.3f} for {cfg.coverage:.0%} coverage"
    )
    return calibration
