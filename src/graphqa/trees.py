"""Gradient-boosted trees on pooled graph features (LightGBM): a first-class, saved scorer.

Features are the pooled rows of :mod:`graphqa.pooled` (sizes; mean, sum, max and signed log1p
of the sum of every node and edge column), computed from the packed splits the ``schema`` stage
writes.

Choosing the recipe: a small grid (``trees.grid``: ``gbdt``, random-forest mode, a per-target
``lambdarank``, smaller leaves...) is judged on *out-of-fold* predictions over every pooled
labelled target (train, val and tuning; the ``cv`` folds of :mod:`graphqa.maths.folds`). For
held fold ``k`` a model is fitted on the other folds but the next one, which early stopping
watches, and predicts fold ``k``; no prediction comes from a model that saw its target. The
recipe with the lowest OOF mean per-target ranking loss ships, refitted on every pooled target
for the median of its folds' best rounds. Its OOF predictions are the trees' evidence in stage
``scorer``.

Determinism: ``deterministic=True``, ``force_row_wise=True``, fixed ``num_threads`` and
``seed`` (row bagging is seeded too), so the same inputs give a byte-identical model file.

Model file: LightGBM's native *text* format (never a pickle), cut at the best round. LightGBM
rejects JSON-special characters (``:`` among them) in feature names, so names are stored
percent-encoded (``node_mean:x`` -> ``node_mean%3Ax``), which is reversible: the loader decodes
them and refuses a file whose features are not the current schema's. The text holds only
LightGBM parameters (no paths: the data come from arrays) and no timestamps. A ``lambdarank``
model's raw scores are per-target ranking scores; :meth:`TreesModel.predict` maps them through
a sigmoid into (0, 1) so every recipe yields a score calibration can fit.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit

from graphqa.config import Params, TreesRecipe
from graphqa.contract import DataContractError
from graphqa.data import PackedSplit
from graphqa.files import atomic_dir, write_json
from graphqa.layout import METRICS, SUMMARY, SchemaPaths
from graphqa.maths.folds import CAPRI_DOCKQ_CUTS, fold_roles, row_folds
from graphqa.maths.metrics import mae, mse, pearson, per_target_table, rounded, spearman
from graphqa.oof import pooled_splits
from graphqa.pooled import pooled_feature_names, pooled_split
from graphqa.schema import FeatureSchema

TREES_FORMAT = "graphqa.trees/1"
MODEL_FILE = "model.txt"
SUMMARY_FILE = SUMMARY
METRICS_FILE = METRICS
OOF_FILE = "oof_predictions.csv"
#: Every LightGBM text model starts with this line (pickles start with ``\x80``).
_TEXT_MAGIC = b"tree\n"


def encode_feature_names(names: list[str]) -> list[str]:
    """LightGBM-safe, reversible feature names (percent-encoding of all but ``[A-Za-z0-9_.-~]``)."""
    return [quote(name, safe="") for name in names]


def decode_feature_names(names: list[str]) -> list[str]:
    """The schema's column names back from LightGBM-safe ones (:func:`encode_feature_names`).

    Args:
        names: encoded names, as a LightGBM model file stores them.

    Returns:
        The original column names.
    """
    return [unquote(name) for name in names]


def relevance_grades(dockq: np.ndarray) -> np.ndarray:
    """Integer relevance per graph for ``lambdarank``: its CAPRI class (0-3) by DockQ."""
    return np.digitize(np.asarray(dockq, dtype=np.float64), CAPRI_DOCKQ_CUTS).astype(np.int64)


def lightgbm_params(settings: TreesRecipe) -> dict[str, Any]:
    """The exact LightGBM parameters of a fit: the recipe's plus the fixed ones that make it
    deterministic (row-wise histograms, fixed threads and seeds) and the early-stopping metric
    (l2; NDCG at 1 for ``lambdarank``: the top-ranked model per target)."""
    ranking = settings.objective == "lambdarank"
    params: dict[str, Any] = {
        "objective": settings.objective,
        "metric": "ndcg" if ranking else "l2",
        "boosting": settings.boosting,
        "num_leaves": settings.num_leaves,
        "learning_rate": settings.learning_rate,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "bagging_fraction": settings.bagging_fraction,
        "bagging_freq": settings.bagging_freq,
        "lambda_l2": settings.lambda_l2,
        "seed": settings.seed,
        "num_threads": settings.num_threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if ranking:
        params["eval_at"] = [1]
    return params


def _objective_of(text: str) -> str:
    """The ``objective=`` of a LightGBM text model's header (its first word)."""
    for line in text.splitlines():
        if line.startswith("objective="):
            words = line.removeprefix("objective=").split()
            return words[0] if words else ""
        if line.startswith("Tree="):
            break
    return ""


@dataclass
class TreesModel:
    """A LightGBM booster (already cut at its best round) and the pooled feature names it
    expects, in column order.

    Args:
        booster: the model.
        feature_names: pooled feature names, in column order.
        objective: LightGBM's objective (``lambdarank`` scores go through a sigmoid).
    """

    booster: lgb.Booster
    feature_names: list[str]
    objective: str = "regression"

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted score per row in [0, 1], float64: DockQ clipped to [0, 1] (squared-error
        trees can step slightly outside the label range), or the sigmoid of a ``lambdarank``
        ranking score."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise DataContractError(
                "pooled features",
                "columns",
                f"a 2-d table with {len(self.feature_names)} pooled feature columns",
                str(tuple(features.shape)),
            )
        pred = np.asarray(self.booster.predict(features), dtype=np.float64)
        if self.objective == "lambdarank":
            return expit(pred)
        return np.clip(pred, 0.0, 1.0)

    def to_text(self) -> str:
        """The LightGBM text model (what :func:`save_trees` writes)."""
        return self.booster.model_to_string()


def _model_from_text(text: str, source: str) -> lgb.Booster:
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "unparsable"
        raise DataContractError(source, "<file>", "a LightGBM text model", message) from None


def _dataset(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    names: list[str],
    params: dict[str, Any],
    reference: lgb.Dataset | None = None,
) -> lgb.Dataset:
    """A LightGBM dataset; for ``lambdarank`` rows must come grouped by target (the caller
    sorts them) and labels are CAPRI grades."""
    ranking = params["objective"] == "lambdarank"
    label = relevance_grades(y) if ranking else np.asarray(y, dtype=np.float64)
    group = None
    if ranking:
        if groups is None:
            raise ValueError("lambdarank needs the target of every row")
        _, first, counts = np.unique(np.asarray(groups), return_index=True, return_counts=True)
        group = counts[np.argsort(first)]
    return lgb.Dataset(
        np.asarray(x, dtype=np.float64),
        label=label,
        group=group,
        feature_name=names,
        params=params,
        reference=reference,
        free_raw_data=False,
    )


def _rows_by_target(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows sorted by target (stable), as ``lambdarank`` needs; other objectives unchanged."""
    if groups is None:
        return x, y, None
    order = np.argsort(np.asarray(groups), kind="stable")
    return x[order], y[order], np.asarray(groups)[order]


def fit_trees(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    feature_names: list[str],
    settings: TreesRecipe,
    train_groups: np.ndarray | None = None,
    val_groups: np.ndarray | None = None,
) -> tuple[TreesModel, dict[str, Any]]:
    """Fit with early stopping on a held set; return the model cut at the best round.

    Args:
        train_x: pooled features fitted on.
        train_y: their DockQ labels.
        val_x: pooled features early stopping watches (never the rows later judged).
        val_y: their labels.
        feature_names: the pooled feature names, in column order.
        settings: the recipe.
        train_groups: target per train row (required by ``lambdarank``).
        val_groups: target per val row (required by ``lambdarank``).

    Returns:
        The model (re-parsed from its text, so it predicts exactly as the saved file will) and
        the facts a summary records: ``best_iteration``, ``rounds_fitted``, ``val_mse`` of
        the scores, ``val_curve`` (per-round value of the stopping metric ``stop_metric``)
        and the ``lightgbm_params``.
    """
    if train_x.shape[1] != len(feature_names) or val_x.shape[1] != len(feature_names):
        raise DataContractError(
            "pooled features",
            "columns",
            f"{len(feature_names)} columns (one per feature name) in train and val",
            f"{train_x.shape[1]} and {val_x.shape[1]}",
        )
    params = lightgbm_params(settings)
    ranking = settings.objective == "lambdarank"
    names = encode_feature_names(feature_names)
    tx, ty, tg = _rows_by_target(train_x, train_y, train_groups if ranking else None)
    vx, vy, vg = _rows_by_target(val_x, val_y, val_groups if ranking else None)
    train_set = _dataset(tx, ty, tg, names, params)
    val_set = _dataset(vx, vy, vg, names, params, reference=train_set)
    curve: dict[str, dict[str, list[float]]] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=settings.max_rounds,
        valid_sets=[val_set],
        valid_names=["val"],
        callbacks=[
            lgb.early_stopping(
                settings.early_stopping_rounds, first_metric_only=True, verbose=False
            ),
            lgb.record_evaluation(curve),
        ],
    )
    stop_metric = "ndcg@1" if ranking else "l2"
    values = [float(v) for v in curve["val"][stop_metric]]
    best = int(booster.best_iteration) or len(values)
    first_best = int(np.argmax(values) if ranking else np.argmin(values)) + 1
    if best != first_best:  # LightGBM keeps the first strict optimum
        raise RuntimeError(f"LightGBM best_iteration {best} is not the first {stop_metric} optimum")
    text = booster.model_to_string(num_iteration=best)
    model = TreesModel(
        booster=_model_from_text(text, "fitted model"),
        feature_names=feature_names,
        objective=settings.objective,
    )
    facts = {
        "best_iteration": best,
        "rounds_fitted": len(values),
        "max_rounds": settings.max_rounds,
        "objective": settings.objective,
        "val_mse": mse(model.predict(val_x), val_y),
        "stop_metric": stop_metric,
        "val_curve": values,
        "lightgbm_params": params,
        "lightgbm_version": lgb.__version__,
    }
    return model, facts


def fit_trees_rounds(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    feature_names: list[str],
    settings: TreesRecipe,
    rounds: int,
) -> TreesModel:
    """Fit a fixed number of rounds on every row (the shipped refit; no held set left).

    Args:
        x: pooled features.
        y: DockQ labels.
        groups: target per row.
        feature_names: pooled feature names.
        settings: the recipe.
        rounds: boosting rounds (the median best round of the out-of-fold fits).

    Returns:
        The model, re-parsed from its text.
    """
    params = lightgbm_params(settings)
    ranking = settings.objective == "lambdarank"
    names = encode_feature_names(feature_names)
    gx, gy, gg = _rows_by_target(x, y, groups if ranking else None)
    booster = lgb.train(params, _dataset(gx, gy, gg, names, params), num_boost_round=rounds)
    text = booster.model_to_string()
    return TreesModel(
        booster=_model_from_text(text, "fitted model"),
        feature_names=feature_names,
        objective=settings.objective,
    )


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of one recipe and the best round of each fold's fit."""

    pred: np.ndarray
    best_iterations: list[int]

    @property
    def refit_rounds(self) -> int:
        """Rounds of the shipped refit: the folds' median best round (ties: the lower)."""
        return int(np.sort(self.best_iterations)[(len(self.best_iterations) - 1) // 2])


def out_of_fold_trees(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    fold: np.ndarray,
    n_folds: int,
    feature_names: list[str],
    settings: TreesRecipe,
) -> OutOfFold:
    """Predict every row from a model fitted without its fold (and stopped on another one).

    Args:
        x: pooled features of every pooled row.
        y: their labels.
        groups: target per row.
        fold: fold per row (:func:`graphqa.maths.folds.row_folds`).
        n_folds: number of folds.
        feature_names: pooled feature names.
        settings: the recipe.

    Returns:
        The predictions (row order) and each fold's best round.
    """
    pred = np.full(len(y), np.nan)
    best = []
    groups = np.asarray(groups)
    for k in range(n_folds):
        role = fold_roles(fold, k, n_folds)
        fit, inner, held = role["fit"], role["inner"], role["held"]
        model, facts = fit_trees(
            x[fit], y[fit], x[inner], y[inner], feature_names, settings, groups[fit], groups[inner]
        )
        pred[held] = model.predict(x[held])
        best.append(int(facts["best_iteration"]))
    return OutOfFold(pred=pred, best_iterations=best)


def save_trees(model: TreesModel, path: str | Path) -> str:
    """Write the text model; return its sha256 (what :func:`load_trees` checks)."""
    data = model.to_text().encode("utf-8")
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Discard what native code writes to file descriptor 2 meanwhile.

    LightGBM's parser prints ``[LightGBM] [Fatal] <reason>`` straight to fd 2 before raising
    the same reason as an exception; :func:`load_trees` reports that reason in its one-line
    error, so the duplicate is dropped. Without a usable fd 2 nothing is redirected.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def load_trees(
    model_path: str | Path,
    expected_sha256: str | None,
    feature_names: list[str],
    sha256_source: str = SUMMARY_FILE,
) -> TreesModel:
    """Load a text model written by :func:`save_trees`, never unpickling anything.

    Args:
        model_path: the LightGBM text model (``model.txt``, or ``trees.txt`` in a bundle).
        expected_sha256: its recorded sha256 (None: not checked).
        feature_names: the pooled feature names of the current schema, in column order.
        sha256_source: where ``expected_sha256`` was recorded, for the error message.

    Returns:
        The model.

    Raises:
        DataContractError: (one line, naming the file and the key) the file is missing or
            unreadable, a pickle or other non-text file, not UTF-8, not a LightGBM text model,
            its sha256 is not ``expected_sha256``, or its features are not ``feature_names``
            (count, then names in order: the schema changed since it was fitted).
    """
    path = Path(model_path)
    expected = "a LightGBM text model written by the `trees` stage"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataContractError(path, "<file>", expected, "no such file") from None
    except OSError as exc:
        raise DataContractError(path, "<file>", expected, type(exc).__name__) from None
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise DataContractError(
                path,
                "sha256",
                f"{expected_sha256} (recorded in {sha256_source})",
                f"{got} (modified)",
            )
    if not data.startswith(_TEXT_MAGIC):
        raise DataContractError(
            path, "<file>", "a LightGBM text model (first line 'tree')", repr(data[:8])
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataContractError(path, "<file>", "UTF-8 text", "undecodable bytes") from None
    with _native_stderr_silenced():
        booster = _model_from_text(text, str(path))
    stored = decode_feature_names(booster.feature_name())
    if len(stored) != len(feature_names):
        raise DataContractError(
            path,
            "feature_names",
            f"{len(feature_names)} pooled features of the current schema",
            f"{len(stored)} (the schema changed since the trees were fitted)",
        )
    if stored != list(feature_names):
        bad = next(i for i, (a, b) in enumerate(zip(stored, feature_names, strict=True)) if a != b)
        raise DataContractError(
            path,
            "feature_names",
            f"feature {bad} '{feature_names[bad]}' of the current schema",
            f"'{stored[bad]}' (the schema changed since the trees were fitted)",
        )
    return TreesModel(
        booster=booster, feature_names=list(feature_names), objective=_objective_of(text)
    )


@dataclass(frozen=True)
class PooledTable:
    """Packed splits as the trees see them: pooled features, DockQ labels, target and graph
    key per row."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    keys: np.ndarray


def pooled_table(schema_dir: str | Path, split: str, schema: FeatureSchema) -> PooledTable:
    """Pooled features of ``<schema_dir>/packed/<split>.pt`` (the schema stage's output), the
    same way :func:`graphqa.reference.fit_trees_on_packed` pools them."""
    packed = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed(split))
    return PooledTable(
        x=pooled_split(packed, schema, f"packed/{split}.pt"),
        y=packed.y.double().numpy(),
        groups=np.asarray(packed.targets),
        keys=np.asarray(packed.keys),
    )


def pooled_targets_table(schema_dir: str | Path, schema: FeatureSchema) -> PooledTable:
    """Every labelled graph the out-of-fold choice may use: train, val and (when packed)
    tuning, in that order; test and val_calib are never pooled."""
    tables = [pooled_table(schema_dir, split, schema) for split in pooled_splits(schema_dir)]
    return PooledTable(
        x=np.concatenate([t.x for t in tables]),
        y=np.concatenate([t.y for t in tables]),
        groups=np.concatenate([t.groups for t in tables]),
        keys=np.concatenate([t.keys for t in tables]),
    )


def ranking_summary(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """MSE/MAE/Pearson/pooled Spearman and per-target means of ranking loss and Spearman
    (:func:`graphqa.maths.metrics.per_target_table`, the definitions ``evaluate`` reports)."""
    per_target = per_target_table(pred, y, groups)
    spearmans = per_target["spearman"].to_numpy(float)
    return {
        "mse": mse(pred, y),
        "mae": mae(pred, y),
        "pearson": pearson(pred, y),
        "spearman_pooled": spearman(pred, y),
        "ranking_loss": float(per_target["ranking_loss"].mean()),
        "spearman_per_target_mean": (
            float(np.nanmean(spearmans)) if np.isfinite(spearmans).any() else float("nan")
        ),
        "n_models": len(y),
        "n_targets": len(per_target),
    }


def score_split(model: TreesModel, table: PooledTable) -> dict[str, float]:
    """:func:`ranking_summary` of a model's predictions for a table."""
    return ranking_summary(model.predict(table.x), table.y, table.groups)


def _json_number(value: Any) -> Any:
    """Round floats (NaN -> None) so metrics files are short and valid JSON."""
    if isinstance(value, float):
        return rounded(value)
    return value


def choose_recipe(
    pool: PooledTable, fold: np.ndarray, n_folds: int, feature_names: list[str], settings: Params
) -> tuple[str, dict[str, OutOfFold], dict[str, dict[str, float]]]:
    """Judge every grid recipe on out-of-fold predictions of the pooled targets.

    Args:
        pool: the pooled targets' table.
        fold: fold per pooled row.
        n_folds: number of folds.
        feature_names: pooled feature names.
        settings: the params (``trees:`` section: base recipe and grid).

    Returns:
        The chosen recipe's name (lowest OOF mean ranking loss; ties: grid order), every
        recipe's OOF predictions and every recipe's OOF :func:`ranking_summary`.
    """
    trees = settings.trees
    oof = {
        name: out_of_fold_trees(
            pool.x, pool.y, pool.groups, fold, n_folds, feature_names, trees.recipe(name)
        )
        for name in trees.grid
    }
    scores = {name: ranking_summary(o.pred, pool.y, pool.groups) for name, o in oof.items()}
    names = list(trees.grid)
    chosen = min(names, key=lambda n: (scores[n]["ranking_loss"], names.index(n)))
    return chosen, oof, scores


def trees_stage(*, params: Params, schema_dir: str | Path, out_dir: str | Path) -> dict:
    """Stage worker for ``trees``: choose a LightGBM recipe out of fold and ship it refitted on
    every pooled target, with the out-of-fold predictions stage ``scorer`` judges it by.

    Reads ``<schema_dir>/feature_metadata.json`` and ``<schema_dir>/packed/{train,val,test}.pt``
    (and ``tuning.pt`` when packed). Writes into ``out_dir`` (atomic swap): ``model.txt``
    (LightGBM text model of the chosen recipe), ``oof_predictions.csv`` (key, target, fold,
    DockQ and one column per recipe), ``summary.json`` (format, features, schema columns,
    chosen recipe and why, every recipe's OOF numbers and fold best rounds, sha256, LightGBM
    params) and ``metrics.json`` (OOF ranking loss per recipe; the shipped file's test
    metrics, reloaded through :func:`load_trees`, for the record: nothing is chosen on them).

    Args:
        params: the params (``trees:`` and ``cv:`` sections).
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``summary.json``.

    Raises:
        DataContractError: ``<schema_dir>/feature_metadata.json`` is missing.
    """
    metadata = SchemaPaths(Path(schema_dir)).feature_metadata
    if not metadata.is_file():
        raise DataContractError(
            metadata, "<file>", "the feature schema written by the `schema` stage", "no such file"
        )
    schema = FeatureSchema.load(metadata)
    names = pooled_feature_names(schema)
    pool = pooled_targets_table(schema_dir, schema)
    test = pooled_table(schema_dir, "test", schema)
    n_folds = params.cv.folds
    fold = row_folds(pool.groups, pool.y, n_folds, params.cv.seed)
    chosen, oof, scores = choose_recipe(pool, fold, n_folds, names, params)
    recipe = params.trees.recipe(chosen)
    rounds = oof[chosen].refit_rounds
    model = fit_trees_rounds(pool.x, pool.y, pool.groups, names, recipe, rounds)
    table = pd.DataFrame(
        {"key": pool.keys, "target": pool.groups, "fold": fold, "dockq": pool.y}
        | {f"pred_{name}": np.round(o.pred, 6) for name, o in oof.items()}
    )
    with atomic_dir(out_dir) as tmp:
        sha = save_trees(model, tmp / MODEL_FILE)
        saved = load_trees(tmp / MODEL_FILE, sha, names)  # metrics are those of the file
        test_scores = score_split(saved, test)
        metrics: dict[str, Any] = {"chosen": chosen, "refit_rounds": rounds}
        for name, values in scores.items():
            metrics[f"oof_{name}_ranking_loss"] = _json_number(values["ranking_loss"])
        metrics |= {f"test_{k}": _json_number(v) for k, v in test_scores.items()}
        summary = {
            "format": TREES_FORMAT,
            "model_file": MODEL_FILE,
            "model_sha256": sha,
            "feature_names": names,
            "schema": {"node_columns": schema.node_columns, "edge_columns": schema.edge_columns},
            "chosen": chosen,
            "reason": (
                f"{chosen}: lowest out-of-fold mean ranking loss over {len(set(pool.groups))} "
                f"pooled targets in {n_folds} folds "
                f"({scores[chosen]['ranking_loss']:.4f}); refitted on all of them for "
                f"{rounds} rounds (median of the folds' best rounds)"
            ),
            "recipe": recipe.model_dump(mode="json"),
            "refit_rounds": rounds,
            "objective": recipe.objective,
            "grid": {
                name: {
                    "overrides": params.trees.grid[name],
                    "fold_best_iterations": oof[name].best_iterations,
                    "oof": {k: _json_number(v) for k, v in scores[name].items()},
                }
                for name in params.trees.grid
            },
            "cv": {"folds": n_folds, "seed": params.cv.seed},
            "lightgbm_params": lightgbm_params(recipe),
            "lightgbm_version": lgb.__version__,
            "n_pooled": len(pool.y),
        }
        (tmp / OOF_FILE).write_text(table.to_csv(index=False, lineterminator="\n"))
        write_json(tmp / SUMMARY_FILE, summary)
        write_json(tmp / METRICS_FILE, metrics)
    return summary
