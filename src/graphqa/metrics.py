"""Quality-assessment metrics: global agreement and per-target ranking of decoys.

Users pick a model per target, so besides Pearson/Spearman over all graphs the pipeline
reports how well each target's decoys are *ranked*: regret of the top-1 pick, per-target
Spearman and whether a good model lands in the top k.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b).statistic)


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    return _corr(pearsonr, np.asarray(pred, float), np.asarray(true, float))


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    return _corr(spearmanr, np.asarray(pred, float), np.asarray(true, float))


def ranking_metrics(
    pred: np.ndarray, true: np.ndarray, groups: np.ndarray, hit_dockq: float = 0.23, top_k: int = 10
) -> dict[str, float]:
    """Per-target ranking metrics averaged over targets.

    - ``regret``: best true DockQ of the target minus the true DockQ of the top-1 prediction
      (ties in prediction resolve to the first decoy in input order).
    - ``target_spearman``: mean Spearman within targets (targets with < 2 decoys or constant
      predictions/labels are skipped).
    - ``hit_rate``: fraction of targets with at least one decoy of true DockQ >= ``hit_dockq``
      whose top ``top_k`` predictions include one (targets without such a decoy are skipped).
    """
    pred, true, groups = np.asarray(pred, float), np.asarray(true, float), np.asarray(groups)
    regrets, spearmans, hits = [], [], []
    for g in np.unique(groups):
        sel = groups == g
        p, t = pred[sel], true[sel]
        regrets.append(float(t.max() - t[int(np.argmax(p))]))
        rho = spearman(p, t)
        if not math.isnan(rho):
            spearmans.append(rho)
        if (t >= hit_dockq).any():
            top = np.argsort(-p, kind="stable")[:top_k]
            hits.append(float((t[top] >= hit_dockq).any()))
    nan = float("nan")
    return {
        "regret": float(np.mean(regrets)) if regrets else nan,
        "target_spearman": float(np.mean(spearmans)) if spearmans else nan,
        "hit_rate": float(np.mean(hits)) if hits else nan,
    }


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
