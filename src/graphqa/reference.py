"""Reference rankers scored beside the GNN, so a user sees what the network adds.

- ``random``: a uniformly random order of each target's models. Its per-target metrics are
  computed *exactly* as expectations (no sampling): expected top-1 DockQ is the target's mean
  DockQ (so expected ranking loss = best - mean), expected top-k hits at a threshold are the
  hypergeometric mean ``min(k, n) * good / n``, expected Spearman is 0.
- ``pooled_trees``: scikit-learn's ``HistGradientBoostingRegressor`` on pooled graph features
  (:mod:`graphqa.pooled`), fitted on the train split with the number of boosting iterations
  picked by val MSE (the val split passed as sklearn's ``X_val``, not a random internal split)
  and a fixed ``random_state``: the same inputs give the same predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor

from graphqa.data import PackedSplit
from graphqa.maths.metrics import HIT_THRESHOLDS, TOP_K, hits_key, mse, target_members
from graphqa.pooled import pooled_split
from graphqa.schema import FeatureSchema


def random_pick_table(
    true: np.ndarray,
    groups: np.ndarray,
    thresholds: Sequence[float] = HIT_THRESHOLDS,
    top_k: int = TOP_K,
) -> pd.DataFrame:
    """Exact expectations of :func:`graphqa.maths.metrics.per_target_table` under a uniformly random
    ranking of each target's models (same columns; hits are expected counts, so fractional)."""
    true = np.asarray(true, dtype=np.float64)
    targets, members = target_members(groups)
    rows = []
    for target, rows_of_target in zip(targets.tolist(), members, strict=True):
        t = true[rows_of_target]
        n, k = len(t), min(top_k, len(t))
        row: dict[str, object] = {
            "TARGET": target,
            "n_models": n,
            "best_dockq": float(t.max()),
            "top1_dockq": float(t.mean()),
            "ranking_loss": float(t.max() - t.mean()),
        }
        for threshold in thresholds:
            row[hits_key(threshold)] = k * float((t >= threshold).sum()) / n
        defined = n >= 2 and np.ptp(t) > 0
        row["spearman"] = 0.0 if defined else float("nan")
        rows.append(row)
    columns = ["TARGET", "n_models", "best_dockq", "top1_dockq", "ranking_loss"]
    columns += [hits_key(t) for t in thresholds] + ["spearman"]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class TreesSettings:
    """Small, regularised boosting: the train splits hold hundreds to thousands of graphs."""

    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 10
    l2_regularization: float = 1.0
    #: Stop boosting once val loss has not improved for this many iterations (saves time only:
    #: the iteration count is then the val minimum of what was fitted).
    n_iter_no_change: int = 20
    random_state: int = 0


@dataclass(frozen=True)
class PooledTrees:
    """The refitted model (``max_iter = n_iter``) and the val curve that chose ``n_iter``."""

    model: HistGradientBoostingRegressor
    n_iter: int
    val_mse: tuple[float, ...]

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(features), dtype=np.float64)


def fit_pooled_trees(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    settings: TreesSettings = TreesSettings(),
) -> PooledTrees:
    """Fit on train (stopping early on val loss), pick the iteration count with the lowest val
    MSE (first minimum), refit with exactly that many iterations: identical to the first
    ``n_iter`` of the long fit, since without subsampling a boosting iteration depends only on
    the ones before it (sklearn keeps every fitted iteration, not the best one)."""
    model = HistGradientBoostingRegressor(
        loss="squared_error",
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        min_samples_leaf=settings.min_samples_leaf,
        l2_regularization=settings.l2_regularization,
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=settings.n_iter_no_change,
        random_state=settings.random_state,
    )
    model.fit(train_x, train_y, X_val=val_x, y_val=val_y)
    val_mse = tuple(mse(p, val_y) for p in model.staged_predict(val_x))
    n_iter = int(np.argmin(val_mse)) + 1
    final = clone(model).set_params(max_iter=n_iter, early_stopping=False)
    final.fit(train_x, train_y)
    return PooledTrees(model=final, n_iter=n_iter, val_mse=val_mse)


def fit_trees_on_packed(
    train: PackedSplit,
    val: PackedSplit,
    schema: FeatureSchema,
    settings: TreesSettings = TreesSettings(),
) -> PooledTrees:
    """:func:`fit_pooled_trees` on the pooled features of packed train and val splits."""
    return fit_pooled_trees(
        pooled_split(train, schema, "packed/train.pt"),
        train.y.double().numpy(),
        pooled_split(val, schema, "packed/val.pt"),
        val.y.double().numpy(),
        settings,
    )
