"""Quality-assessment metrics: the one definition of every number graphqa reports.

Users pick a model per target, so besides agreement over all graphs (MSE, MAE, pooled
Pearson/Spearman) the pipeline reports how well each target's decoys are *ranked*: the ranking
loss of the top-1 pick, per-target Spearman and how many good models land in the top k. Training
(val and tuning metrics), calibration, ``graphqa predict`` and the ``evaluate`` stage all call
the functions here, so a number means the same everywhere.

Tie-break (one rule everywhere): models are ranked by a *stable* sort on the prediction,
descending, so equal predictions keep their input order (the label CSV's row order for packed
splits and for ``predict --labels``). Training has no model names, so the rule cannot use them.

Uncertainty: :func:`resample_targets` draws bootstrap resamples of *targets* (splits are by
target, so targets are the independent units) and :func:`percentile_interval` turns the
resampled statistics into a percentile interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr
from torchmetrics.functional import mean_absolute_error, mean_squared_error

#: CAPRI DockQ thresholds of acceptable / medium / high quality: the seeds' hits "a/b/c".
HIT_THRESHOLDS = (0.23, 0.49, 0.80)
#: Models per target inspected by the hit counts (the seeds' top-10).
TOP_K = 10
#: Bootstrap defaults for intervals over targets.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95
#: Fewer targets than this carry no interval (NaN bounds): one target's resamples are all
#: alike, which is not certainty.
MIN_BOOTSTRAP_TARGETS = 2


def rounded(value: float | None, digits: int = 6) -> float | None:
    """A number as written to JSON outputs: rounded, and ``None`` when missing or not finite
    (JSON has no NaN or infinity, and rounding keeps outputs byte-stable across machines).

    Args:
        value: the number (or ``None``).
        digits: decimal places kept.

    Returns:
        The rounded float, or ``None``.
    """
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _float64(a: object) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _same_length(pred: np.ndarray, true: np.ndarray, *more: np.ndarray) -> None:
    if any(len(x) != len(pred) for x in (true, *more)):
        lengths = [len(pred), len(true), *(len(x) for x in more)]
        raise ValueError(f"metric inputs differ in length: {lengths}")


def mse(pred: object, true: object) -> float:
    """Mean squared error (torchmetrics), float64; accepts numpy arrays or tensors."""
    p, t = _float64(pred), _float64(true)
    _same_length(p, t)
    if p.size == 0:
        return float("nan")
    return float(mean_squared_error(torch.tensor(p), torch.tensor(t)))


def mae(pred: object, true: object) -> float:
    """Mean absolute error (torchmetrics), float64; accepts numpy arrays or tensors."""
    p, t = _float64(pred), _float64(true)
    _same_length(p, t)
    if p.size == 0:
        return float("nan")
    return float(mean_absolute_error(torch.tensor(p), torch.tensor(t)))


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b).statistic)


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation of predictions with labels, NaN where it is undefined.

    Args:
        pred: predicted scores.
        true: labels, same length.

    Returns:
        The correlation; NaN for fewer than 2 values or a constant input.
    """
    return _corr(pearsonr, np.asarray(pred, float), np.asarray(true, float))


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation of predictions with labels, NaN where it is undefined.

    Args:
        pred: predicted scores.
        true: labels, same length.

    Returns:
        The correlation; NaN for fewer than 2 values or a constant input.
    """
    return _corr(spearmanr, np.asarray(pred, float), np.asarray(true, float))


def hits_key(threshold: float) -> str:
    """Column/metric name of the top-k hit count at a DockQ threshold: 0.23 -> ``hits_023``."""
    return f"hits_{round(threshold * 100):03d}"


def rank_order(pred: np.ndarray) -> np.ndarray:
    """Indices from the best to the worst prediction; ties keep their input order."""
    return np.argsort(-_float64(pred), kind="stable")


def ranks_within_targets(pred: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1-based rank of every model within its target under the tie-break rule above."""
    pred, groups = _float64(pred), np.asarray(groups)
    _same_length(pred, groups)
    ranks = np.empty(len(pred), dtype=np.int64)
    for rows in target_members(groups)[1]:
        ranks[rows[rank_order(pred[rows])]] = np.arange(1, len(rows) + 1)
    return ranks


def target_members(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct targets and, for each, the row indices of its models (input order)."""
    groups = np.asarray(groups)
    targets, codes = np.unique(groups, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(targets)))[:-1]
    return targets, np.split(order, bounds) if len(targets) else []


def per_target_table(
    pred: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    thresholds: Sequence[float] = HIT_THRESHOLDS,
    top_k: int = TOP_K,
) -> pd.DataFrame:
    """One row per target (sorted), as the seeds' inference reports it.

    - ``n_models``; ``best_dockq``: best true DockQ of the target; ``top1_dockq``: true DockQ of
      the top-1 prediction; ``ranking_loss = best_dockq - top1_dockq``.
    - ``hits_023``, ``hits_049``, ``hits_080`` (one per threshold): how many of the target's
      top-``top_k`` predicted models have true DockQ >= threshold (a count; a target with fewer
      than ``top_k`` models contributes all of them).
    - ``spearman``: Spearman within the target (NaN with < 2 models or constant
      predictions/labels).

    Ranking follows the module's tie-break rule (stable sort, ties in input order).
    """
    pred, true, groups = _float64(pred), _float64(true), np.asarray(groups)
    _same_length(pred, true, groups)
    targets, members = target_members(groups)
    rows = []
    for target, rows_of_target in zip(targets.tolist(), members, strict=True):
        p, t = pred[rows_of_target], true[rows_of_target]
        ranked = t[rank_order(p)]
        row: dict[str, object] = {
            "TARGET": target,
            "n_models": len(t),
            "best_dockq": float(t.max()),
            "top1_dockq": float(ranked[0]),
            "ranking_loss": float(t.max() - ranked[0]),
        }
        for threshold in thresholds:
            row[hits_key(threshold)] = int((ranked[:top_k] >= threshold).sum())
        row["spearman"] = spearman(p, t)
        rows.append(row)
    columns = ["TARGET", "n_models", "best_dockq", "top1_dockq", "ranking_loss"]
    columns += [hits_key(t) for t in thresholds] + ["spearman"]
    return pd.DataFrame(rows, columns=columns)


def _nanmean(values: pd.Series | np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def ranking_metrics(
    pred: np.ndarray, true: np.ndarray, groups: np.ndarray, hit_dockq: float = 0.23, top_k: int = 10
) -> dict[str, float]:
    """Training's per-target ranking metrics, read off :func:`per_target_table`.

    - ``regret``: mean ``ranking_loss`` over targets.
    - ``target_spearman``: mean per-target Spearman (undefined targets skipped).
    - ``hit_rate``: fraction of targets with at least one decoy of true DockQ >= ``hit_dockq``
      whose top ``top_k`` predictions include one (targets without such a decoy are skipped).
    """
    table = per_target_table(pred, true, groups, (hit_dockq,), top_k)
    eligible = table["best_dockq"].to_numpy() >= hit_dockq
    hits = table[hits_key(hit_dockq)].to_numpy()[eligible] > 0
    return {
        "regret": _nanmean(table["ranking_loss"]),
        "target_spearman": _nanmean(table["spearman"]),
        "hit_rate": float(hits.mean()) if hits.size else float("nan"),
    }


def split_metrics(
    pred: np.ndarray, true: np.ndarray, groups: np.ndarray, hit_dockq: float, top_k: int
) -> dict[str, float]:
    """Whole-split agreement plus per-target ranking metrics of one split's predictions.

    One function for every split a run scores (val each epoch, the optional tuning split), so
    ``val_regret`` and ``tuning_rank_regret`` can never drift apart in definition.
    """
    ranking = ranking_metrics(pred, true, groups, hit_dockq, top_k)
    return {
        "loss": mse(pred, true),
        "pearson": pearson(pred, true),
        "spearman": spearman(pred, true),
        "mae": mae(pred, true),
        **ranking,
    }


#: The tuning split's hit rate is reported at the CAPRI "acceptable" threshold (name: _023).
TUNING_HIT_DOCKQ = 0.23
#: tuning metric -> key of :func:`split_metrics` it reports.
TUNING_METRICS = {
    "tuning_rank_spearman": "target_spearman",
    "tuning_rank_regret": "regret",
    "tuning_hit_rate_023": "hit_rate",
    "tuning_dockq_mae": "mae",
}


def tuning_metrics(
    pred: np.ndarray, true: np.ndarray, groups: np.ndarray, top_k: int
) -> dict[str, float]:
    """The seeds' tuning-split metrics: mean per-target Spearman, top-1 regret, top-``top_k``
    hit rate at DockQ >= 0.23 and DockQ MAE (same definitions as the val metrics)."""
    values = split_metrics(pred, true, groups, TUNING_HIT_DOCKQ, top_k)
    return {name: values[key] for name, key in TUNING_METRICS.items()}


def ranking_groups(groups: np.ndarray) -> int:
    """Targets with at least two models: the ones a per-target ranking metric can score."""
    _, counts = np.unique(np.asarray(groups), return_counts=True)
    return int((counts >= 2).sum())


def selection_score(
    val_loss: float,
    val_spearman: float,
    *,
    use_spearman: bool = True,
    weight: float = 1.0,
    min_delta: float = 0.0,
) -> float:
    """Lower is better: ``val_loss - weight * max(0, val_spearman - min_delta)``.

    A NaN Spearman (constant predictions) earns no bonus, so a collapsed model never wins.
    """
    if not use_spearman or math.isnan(val_spearman):
        return float(val_loss)
    return float(val_loss - weight * max(0.0, val_spearman - min_delta))


def ema(previous: float | None, value: float, decay: float) -> float:
    """Exponential moving average; the first value seeds it."""
    return value if previous is None else decay * previous + (1 - decay) * value


# --------------------------------------------------------------------------- bootstrap


def resample_targets(
    n_targets: int, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """``[n_resamples, n_targets]`` target indices drawn with replacement (fixed seed).

    Draw once and reuse for every metric and ranker of a run, so their intervals come from the
    same resamples (a paired bootstrap: differences between rankers are meaningful).
    """
    if n_targets < 1 or n_resamples < 1:
        raise ValueError(f"need >= 1 target and resample, got {n_targets} and {n_resamples}")
    return np.random.default_rng(seed).integers(0, n_targets, size=(n_resamples, n_targets))


def percentile_interval(
    statistics: np.ndarray, level: float = BOOTSTRAP_LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval: the ``(1 -/+ level) / 2`` quantiles (linear
    interpolation, ``np.quantile``'s default) of the finite resampled statistics."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    stats = _float64(statistics)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(stats, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def bootstrap_mean(
    per_target: np.ndarray, resamples: np.ndarray, level: float = BOOTSTRAP_LEVEL
) -> tuple[float, float]:
    """Interval of a mean over targets (NaN targets skipped, as in the point estimate)."""
    per_target = _float64(per_target)
    if np.isfinite(per_target).sum() < MIN_BOOTSTRAP_TARGETS:
        return float("nan"), float("nan")
    values = per_target[resamples]
    with warnings.catch_warnings():  # a resample of only NaN targets is NaN, then dropped
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values, axis=1)
    return percentile_interval(means, level)


def bootstrap_pooled(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    pred: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    resamples: np.ndarray,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float]:
    """Interval of a statistic over all models (e.g. pooled Spearman) with *targets*
    resampled: every model of a drawn target enters, once per draw. ``resamples`` index the
    sorted targets of ``groups`` (see :func:`target_members`)."""
    pred, true = _float64(pred), _float64(true)
    _, members = target_members(groups)
    if len(members) < MIN_BOOTSTRAP_TARGETS:
        return float("nan"), float("nan")
    stats = np.array(
        [statistic(pred[rows], true[rows]) for rows in _rows_of(members, resamples)],
        dtype=np.float64,
    )
    return percentile_interval(stats, level)


def _rows_of(members: list[np.ndarray], resamples: np.ndarray) -> list[np.ndarray]:
    return [np.concatenate([members[j] for j in draw]) for draw in resamples]


# --------------------------------------------------------------------------- reliability


def _probabilities(name: str, a: object) -> np.ndarray:
    out = _float64(a)
    if out.ndim != 1 or out.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Mean prediction vs mean observed DockQ in equal-width bins over [0, 1].

    Bin ``i`` is ``[i / bins, (i + 1) / bins)``, the last one closed so 1.0 is counted. Empty
    bins are skipped. Labels may be continuous, so ``mean_observed`` is a mean DockQ rather
    than a positive rate (hence no torchmetrics calibration error, which wants 0/1 labels).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs, labels = _probabilities("probs", probs), _probabilities("labels", labels)
    if probs.shape != labels.shape:
        raise ValueError(f"probs and labels differ in length: {probs.size} != {labels.size}")
    if probs.min() < 0.0 or probs.max() > 1.0:
        raise ValueError("probs must lie in [0, 1]")
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
