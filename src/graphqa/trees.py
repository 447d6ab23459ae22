"""Gradient-boosted trees on pooled graph features (LightGBM): a first-class, saved scorer.

The reference ranker in :mod:`graphqa.reference` is refitted inside ``evaluate`` and thrown
away; this stage keeps its model, so it can be compared, shipped and reused. Features are the
pooled rows of :mod:`graphqa.pooled` (sizes; mean, sum, max and signed log1p of the sum of every
node and edge column), computed from the packed splits the ``schema`` stage writes.

Fitting: train on train, val passed to LightGBM as its valid set (metric l2) with early
stopping; the model keeps the round with the lowest val l2 (first minimum). Determinism:
``deterministic=True``, ``force_row_wise=True``, fixed ``num_threads`` and ``seed``, bagging
off, so the same inputs give a byte-identical model file.

Model file: LightGBM's native *text* format (never a pickle), cut at the best round. LightGBM
rejects JSON-special characters (``:`` among them) in feature names, so names are stored
percent-encoded (``node_mean:x`` -> ``node_mean%3Ax``), which is reversible: the loader decodes
them and refuses a file whose features are not the current schema's. The text holds only
LightGBM parameters (no paths: the data come from arrays, so ``data``/``valid`` are empty) and
no timestamps.
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

from graphqa.config import Params, TreesConfig
from graphqa.contract import DataContractError
from graphqa.data import PackedSplit
from graphqa.files import atomic_dir, write_json
from graphqa.layout import METRICS, SUMMARY, SchemaPaths
from graphqa.maths.metrics import mae, mse, pearson, per_target_table, spearman
from graphqa.pooled import pooled_feature_names, pooled_split
from graphqa.schema import FeatureSchema

TREES_FORMAT = "graphqa.trees/1"
MODEL_FILE = "model.txt"
SUMMARY_FILE = SUMMARY
METRICS_FILE = METRICS
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


def lightgbm_params(settings: TreesConfig) -> dict[str, Any]:
    """The exact LightGBM parameters of a fit: the configured ones plus the fixed ones that make
    it deterministic (bagging off, row-wise histograms, fixed threads and seeds, l2 metric)."""
    return {
        "objective": settings.objective,
        "metric": "l2",
        "boosting": "gbdt",
        "num_leaves": settings.num_leaves,
        "learning_rate": settings.learning_rate,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "bagging_fraction": 1.0,
        "bagging_freq": 0,
        "lambda_l2": settings.lambda_l2,
        "seed": settings.seed,
        "num_threads": settings.num_threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


@dataclass
class TreesModel:
    """A LightGBM booster (already cut at its best round) and the pooled feature names it
    expects, in column order."""

    booster: lgb.Booster
    feature_names: list[str]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted DockQ per row, float64, clipped to [0, 1] (squared-error trees can step
        slightly outside the label range)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise DataContractError(
                "pooled features",
                "columns",
                f"a 2-d table with {len(self.feature_names)} pooled feature columns",
                str(tuple(features.shape)),
            )
        pred = np.asarray(self.booster.predict(features), dtype=np.float64)
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


def fit_trees(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    feature_names: list[str],
    settings: TreesConfig,
) -> tuple[TreesModel, dict[str, Any]]:
    """Fit on train with early stopping on val l2; return the model cut at the best round
    (re-parsed from its text, so it predicts exactly as the saved file will) and the facts a
    summary records: ``best_iteration``, ``rounds_fitted``, ``val_mse`` (clipped predictions),
    ``val_l2_curve`` (LightGBM's per-round val l2, unclipped) and the ``lightgbm_params``."""
    if train_x.shape[1] != len(feature_names) or val_x.shape[1] != len(feature_names):
        raise DataContractError(
            "pooled features",
            "columns",
            f"{len(feature_names)} columns (one per feature name) in train and val",
            f"{train_x.shape[1]} and {val_x.shape[1]}",
        )
    params = lightgbm_params(settings)
    names = encode_feature_names(feature_names)
    train_set = lgb.Dataset(
        np.asarray(train_x, dtype=np.float64),
        label=np.asarray(train_y, dtype=np.float64),
        feature_name=names,
        params=params,
        free_raw_data=False,
    )
    val_set = lgb.Dataset(
        np.asarray(val_x, dtype=np.float64),
        label=np.asarray(val_y, dtype=np.float64),
        reference=train_set,
        free_raw_data=False,
    )
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
    val_l2 = [float(v) for v in curve["val"]["l2"]]
    best = int(booster.best_iteration) or len(val_l2)
    if best != int(np.argmin(val_l2)) + 1:  # LightGBM keeps the first strict minimum
        raise RuntimeError(f"LightGBM best_iteration {best} is not the val l2 minimum")
    text = booster.model_to_string(num_iteration=best)
    model = TreesModel(booster=_model_from_text(text, "fitted model"), feature_names=feature_names)
    facts = {
        "best_iteration": best,
        "rounds_fitted": len(val_l2),
        "max_rounds": settings.max_rounds,
        "objective": settings.objective,
        "val_mse": mse(model.predict(val_x), val_y),
        "val_l2_curve": val_l2,
        "lightgbm_params": params,
        "lightgbm_version": lgb.__version__,
    }
    return model, facts


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
    return TreesModel(booster=booster, feature_names=list(feature_names))


@dataclass(frozen=True)
class PooledTable:
    """One packed split as the trees see it: pooled features, DockQ labels, target per row."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def pooled_table(schema_dir: str | Path, split: str, schema: FeatureSchema) -> PooledTable:
    """Pooled features of ``<schema_dir>/packed/<split>.pt`` (the schema stage's output), the
    same way :func:`graphqa.reference.fit_trees_on_packed` pools them."""
    packed = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed(split))
    return PooledTable(
        x=pooled_split(packed, schema, f"packed/{split}.pt"),
        y=packed.y.double().numpy(),
        groups=np.asarray(packed.targets),
    )


def score_split(model: TreesModel, table: PooledTable) -> dict[str, float]:
    """MSE/MAE/Pearson/pooled Spearman and per-target means of ranking loss and Spearman
    (:func:`graphqa.maths.metrics.per_target_table`, the definitions ``evaluate`` reports)."""
    pred = model.predict(table.x)
    per_target = per_target_table(pred, table.y, table.groups)
    spearmans = per_target["spearman"].to_numpy(float)
    return {
        "mse": mse(pred, table.y),
        "mae": mae(pred, table.y),
        "pearson": pearson(pred, table.y),
        "spearman_pooled": spearman(pred, table.y),
        "ranking_loss": float(per_target["ranking_loss"].mean()),
        "spearman_per_target_mean": (
            float(np.nanmean(spearmans)) if np.isfinite(spearmans).any() else float("nan")
        ),
        "n_models": len(table.y),
        "n_targets": len(per_target),
    }


def _json_number(value: Any) -> Any:
    """Round floats (NaN -> None) so metrics files are short and valid JSON."""
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else None
    return value


def trees_stage(*, params: Params, schema_dir: str | Path, out_dir: str | Path) -> dict:
    """Stage worker for ``trees``: fit LightGBM on pooled graph features, the non-GNN family
    stage ``scorer`` weighs against the network.

    Fits on train, stopping on val l2. Reads ``<schema_dir>/feature_metadata.json`` and
    ``<schema_dir>/packed/{train,val,test}.pt``. Writes into ``out_dir`` (atomic swap):
    ``model.txt`` (LightGBM text model), ``summary.json`` (format, features, schema columns,
    best round, sha256, LightGBM params, val metrics) and ``metrics.json`` (val and test
    metrics of the saved file, reloaded through :func:`load_trees`).

    Args:
        params: the params (``trees:`` section).
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``summary.json``.

    Raises:
        DataContractError: ``<schema_dir>/feature_metadata.json`` is missing.
    """
    settings = params.trees
    metadata = SchemaPaths(Path(schema_dir)).feature_metadata
    if not metadata.is_file():
        raise DataContractError(
            metadata, "<file>", "the feature schema written by the `schema` stage", "no such file"
        )
    schema = FeatureSchema.load(metadata)
    names = pooled_feature_names(schema)
    train, val, test = (pooled_table(schema_dir, s, schema) for s in ("train", "val", "test"))
    model, facts = fit_trees(train.x, train.y, val.x, val.y, names, settings)
    with atomic_dir(out_dir) as tmp:
        sha = save_trees(model, tmp / MODEL_FILE)
        saved = load_trees(tmp / MODEL_FILE, sha, names)  # metrics are those of the file
        scores = {"val": score_split(saved, val), "test": score_split(saved, test)}
        metrics = {
            f"{split}_{key}": _json_number(value)
            for split, values in scores.items()
            for key, value in values.items()
        }
        metrics["best_iteration"] = facts["best_iteration"]
        summary = {
            "format": TREES_FORMAT,
            "model_file": MODEL_FILE,
            "model_sha256": sha,
            "feature_names": names,
            "schema": {"node_columns": schema.node_columns, "edge_columns": schema.edge_columns},
            "best_iteration": facts["best_iteration"],
            "rounds_fitted": facts["rounds_fitted"],
            "max_rounds": facts["max_rounds"],
            "objective": facts["objective"],
            "trees_params": settings.model_dump(mode="json"),
            "lightgbm_params": facts["lightgbm_params"],
            "lightgbm_version": facts["lightgbm_version"],
            "n_train": len(train.y),
            "val_metrics": {k: _json_number(v) for k, v in scores["val"].items()},
            "val_l2_curve": [_json_number(v) for v in facts["val_l2_curve"]],
        }
        write_json(tmp / SUMMARY_FILE, summary)
        write_json(tmp / METRICS_FILE, metrics)
    return summary
