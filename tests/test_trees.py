"""Stage `trees`: deterministic LightGBM text models, a grid judged out of fold, load refusals."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from graphqa.config import ConfigError, TreesRecipe, parse_params
from graphqa.contract import DataContractError
from graphqa.maths.folds import row_folds
from graphqa.maths.metrics import mse, spearman
from graphqa.pooled import pooled_feature_names
from graphqa.schema import FeatureSchema
from graphqa.trees import (
    TREES_FORMAT,
    TreesModel,
    fit_trees,
    fit_trees_rounds,
    load_trees,
    out_of_fold_trees,
    save_trees,
    trees_stage,
)

from .conftest import REPO, TINY_OVERRIDES

# Names with ':' like the real pooled names: LightGBM rejects them unencoded.
NAMES = [f"node_mean:col{i}" for i in range(6)]
FAST = TreesRecipe(max_rounds=200, early_stopping_rounds=10, learning_rate=0.2, num_leaves=7)


def _planted(seed: int, n: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Label = a smooth function of the first two columns (plus noise), clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    y = 1 / (1 + np.exp(-(x[:, 0] - 0.5 * x[:, 1] ** 2))) + rng.normal(0, noise, n)
    return x, np.clip(y, 0, 1)


@pytest.fixture(scope="module")
def fitted() -> tuple[TreesModel, dict]:
    train_x, train_y = _planted(0, 300)
    val_x, val_y = _planted(1, 100)
    return fit_trees(train_x, train_y, val_x, val_y, NAMES, FAST)


def test_two_fits_write_byte_identical_text(fitted: tuple[TreesModel, dict], tmp_path: Path):
    train_x, train_y = _planted(0, 300)
    val_x, val_y = _planted(1, 100)
    again, facts = fit_trees(train_x, train_y, val_x, val_y, NAMES, FAST)
    assert again.to_text() == fitted[0].to_text()
    assert save_trees(again, tmp_path / "a.txt") == save_trees(fitted[0], tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    assert facts == fitted[1]


def test_it_learns_the_planted_signal(fitted: tuple[TreesModel, dict]) -> None:
    model, facts = fitted
    test_x, test_y = _planted(2, 200)
    pred = model.predict(test_x)
    assert pred.dtype == np.float64 and pred.min() >= 0 and pred.max() <= 1
    assert spearman(pred, test_y) > 0.8
    assert mse(pred, test_y) < mse(np.full(len(test_y), test_y.mean()), test_y) / 3
    assert facts["val_mse"] < 0.01


def test_cross_entropy_objective_learns_and_stays_in_range() -> None:
    train_x, train_y = _planted(0, 300)
    val_x, val_y = _planted(1, 100)
    model, facts = fit_trees(
        train_x,
        train_y,
        val_x,
        val_y,
        NAMES,
        FAST.model_copy(update={"objective": "cross_entropy"}),
    )
    test_x, test_y = _planted(2, 200)
    assert "objective=cross_entropy" in model.to_text()
    assert facts["objective"] == "cross_entropy"
    assert spearman(model.predict(test_x), test_y) > 0.8


def test_early_stopping_keeps_the_best_val_round() -> None:
    """On a noisy target val loss turns up early: boosting stops ``early_stopping_rounds`` after
    the val minimum and the model keeps exactly that round; another val set, another round."""
    train_x, train_y = _planted(0, 200, noise=0.3)
    val_x, val_y = _planted(1, 100, noise=0.3)
    model, facts = fit_trees(train_x, train_y, val_x, val_y, NAMES, FAST)
    best, curve = facts["best_iteration"], facts["val_curve"]
    assert best < FAST.max_rounds
    assert facts["rounds_fitted"] == best + FAST.early_stopping_rounds == len(curve)
    assert best == int(np.argmin(curve)) + 1
    assert model.booster.num_trees() == best
    other_x, other_y = _planted(5, 100, noise=0.3)
    other, other_facts = fit_trees(train_x, train_y, other_x, other_y, NAMES, FAST)
    assert other_facts["best_iteration"] != best
    assert other.booster.num_trees() == other_facts["best_iteration"]


def test_saved_file_is_lightgbm_text_not_pickle(
    fitted: tuple[TreesModel, dict], tmp_path: Path
) -> None:
    path = tmp_path / "model.txt"
    sha = save_trees(fitted[0], path)
    data = path.read_bytes()
    assert data.startswith(b"tree\n") and sha == hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8")
    assert "feature_names=node_mean%3Acol0" in text  # encoded; decoded on load
    assert str(tmp_path) not in text and "[data: ]" in text
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    loaded = load_trees(path, sha, NAMES)
    assert loaded.feature_names == NAMES
    x, _ = _planted(3, 50)
    assert np.array_equal(loaded.predict(x), fitted[0].predict(x))
    # a pickle in its place is refused even without a recorded sha
    pickled = tmp_path / "pickled.txt"
    pickled.write_bytes(pickle.dumps(fitted[0].booster))
    with pytest.raises(DataContractError, match="LightGBM text model"):
        load_trees(pickled, None, NAMES)


def test_a_tampered_file_is_refused(fitted: tuple[TreesModel, dict], tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    sha = save_trees(fitted[0], path)
    text = path.read_text()
    path.write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    with pytest.raises(DataContractError, match="sha256") as err:
        load_trees(path, sha, NAMES)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and sha in message
    with pytest.raises(DataContractError, match="no such file"):
        load_trees(tmp_path / "missing.txt", sha, NAMES)


def test_features_of_another_schema_are_refused(
    fitted: tuple[TreesModel, dict], tmp_path: Path
) -> None:
    path = tmp_path / "model.txt"
    sha = save_trees(fitted[0], path)
    with pytest.raises(DataContractError, match="5 pooled features") as err:
        load_trees(path, sha, NAMES[:5])
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    renamed = [*NAMES[:3], "node_mean:other", *NAMES[4:]]
    with pytest.raises(DataContractError, match="feature 3 'node_mean:other'"):
        load_trees(path, sha, renamed)
    with pytest.raises(DataContractError, match="6 pooled feature columns"):
        fitted[0].predict(np.zeros((2, 5)))


def test_trees_params_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"trees\.objective"):
        parse_params({"trees": {"objective": "poisson"}})
    with pytest.raises(ConfigError, match=r"trees\.bagging"):
        parse_params({"trees": {"bagging": True}})


TINY_TREES = {"trees.min_data_in_leaf": 2, "trees.max_rounds": 40, "trees.num_leaves": 4}


def test_stage_writes_model_summary_and_metrics(tiny_schema_dir: Path, tmp_path: Path) -> None:
    params = parse_params({}, {**TINY_OVERRIDES, **TINY_TREES})
    out = tmp_path / "trees"
    summary = trees_stage(params=params, schema_dir=tiny_schema_dir, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "model.txt",
        "oof_predictions.csv",
        "summary.json",
    ]
    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    names = pooled_feature_names(schema)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary and summary["format"] == TREES_FORMAT
    assert summary["feature_names"] == names
    assert summary["schema"]["node_columns"] == schema.node_columns
    assert summary["chosen"] in params.trees.grid and set(summary["grid"]) == set(params.trees.grid)
    chosen = summary["grid"][summary["chosen"]]
    assert chosen["oof"]["ranking_loss"] == min(
        g["oof"]["ranking_loss"] for g in summary["grid"].values()
    )
    assert len(chosen["fold_best_iterations"]) == params.cv.folds
    assert 1 <= summary["refit_rounds"] <= 40
    assert summary["lightgbm_params"]["deterministic"] is True
    model = load_trees(out / "model.txt", summary["model_sha256"], names)
    assert model.booster.num_trees() == summary["refit_rounds"]
    assert model.objective == summary["objective"]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_mse", "test_spearman_pooled", "test_ranking_loss", "chosen"):
        assert key in metrics
    for name in params.trees.grid:
        assert f"oof_{name}_ranking_loss" in metrics
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert oof["fold"].nunique() == params.cv.folds  # every pooled graph predicted once
    assert (
        oof["key"].is_unique and oof[[f"pred_{n}" for n in params.trees.grid]].notna().all().all()
    )
    for path in out.iterdir():
        assert (
            str(tmp_path) not in path.read_text() and str(tiny_schema_dir) not in path.read_text()
        )

    # the stage script, end to end, writes the same bytes (same params, same inputs)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.to_dict()))
    again = tmp_path / "again"
    cmd = [sys.executable, "stages/trees.py", "--params", str(params_file)]
    cmd += ["--schema-dir", str(tiny_schema_dir), "--out", str(again)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    assert "lowest out-of-fold mean ranking loss" in done.stdout
    for name in ("model.txt", "summary.json", "metrics.json", "oof_predictions.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def _pool(seed: int, n_targets: int = 12, per_target: int = 10):
    """A pooled table with a planted signal: targets of ``per_target`` models each."""
    x, y = _planted(seed, n_targets * per_target)
    groups = np.repeat([f"T{i:02d}" for i in range(n_targets)], per_target)
    return x, y, groups


@pytest.mark.parametrize(
    "recipe",
    [
        FAST,
        FAST.model_copy(update={"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1}),
        FAST.model_copy(update={"objective": "lambdarank", "min_data_in_leaf": 2}),
    ],
    ids=["gbdt", "rf", "lambdarank"],
)
def test_out_of_fold_predictions_do_not_depend_on_their_own_labels(recipe: TreesRecipe) -> None:
    x, y, groups = _pool(0)
    fold = row_folds(groups, y, 4, seed=0)
    base = out_of_fold_trees(x, y, groups, fold, 4, NAMES, recipe)
    assert np.isfinite(base.pred).all() and len(base.best_iterations) == 4
    held = groups == "T03"
    changed = y.copy()
    # permute the held target's labels (its best DockQ and size, hence its fold, stay)
    changed[held] = np.random.default_rng(1).permutation(y[held])[::-1]
    assert not np.array_equal(changed[held], y[held])
    again = out_of_fold_trees(x, changed, groups, fold, 4, NAMES, recipe)
    assert np.array_equal(row_folds(groups, changed, 4, seed=0), fold)
    assert np.array_equal(again.pred[held], base.pred[held])
    # the same change does move the predictions of the folds that fitted on it
    assert not np.array_equal(again.pred[~held], base.pred[~held])


def test_a_lambdarank_model_scores_in_unit_interval_and_reloads(tmp_path: Path) -> None:
    x, y, groups = _pool(2)
    recipe = FAST.model_copy(update={"objective": "lambdarank", "min_data_in_leaf": 2})
    model = fit_trees_rounds(x, y, groups, NAMES, recipe, rounds=20)
    pred = model.predict(x)
    assert ((pred > 0) & (pred < 1)).all()
    sha = save_trees(model, tmp_path / "model.txt")
    loaded = load_trees(tmp_path / "model.txt", sha, NAMES)
    assert loaded.objective == "lambdarank"
    assert np.array_equal(loaded.predict(x), pred)


def test_grid_entries_are_validated_at_load() -> None:
    with pytest.raises(ConfigError, match=r"trees.grid.rf.*bagging"):
        parse_params({"trees": {"grid": {"rf": {"boosting": "rf"}}}})
    with pytest.raises(ConfigError, match=r"trees.grid.x: unknown key"):
        parse_params({"trees": {"grid": {"x": {"leaves": 3}}}})
    with pytest.raises(ConfigError, match=r"cv.fold_ids must be \[0, 1, 2\]"):
        parse_params({"cv": {"folds": 3}})
