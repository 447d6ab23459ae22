"""The shipped-scorer decision: GNN, trees or blend, chosen on val targets with evidence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logit

from graphqa.maths.metrics import per_target_table
from graphqa.scorer import (
    Scorer,
    choose_family,
    fit_blend_weight,
    out_of_fold_blend,
    target_folds,
)


def _val_set(n_targets: int = 24, per_target: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"T{i:02d}" for i in range(n_targets)], per_target)
    true = rng.beta(0.5, 0.5, size=len(groups))  # two-peaked, like DockQ
    return rng, true, groups


def _noisy(rng: np.random.Generator, true: np.ndarray, noise: float) -> np.ndarray:
    return np.clip(true + rng.normal(0, noise, len(true)), 0.001, 0.999)


def test_blend_weight_follows_the_better_component() -> None:
    rng, true, _ = _val_set()
    good, bad = _noisy(rng, true, 0.02), _noisy(rng, true, 0.4)
    assert fit_blend_weight(good, bad, true) >= 0.9  # weight is the GNN's (first argument)
    assert fit_blend_weight(bad, good, true) <= 0.1


def test_out_of_fold_blend_never_uses_a_targets_own_labels() -> None:
    rng, true, groups = _val_set()
    gnn, trees = _noisy(rng, true, 0.1), _noisy(rng, true, 0.2)
    pred, weights = out_of_fold_blend(gnn, trees, true, groups)
    held = target_folds(groups) == 0
    scrambled = true.copy()
    scrambled[held] = 1.0 - scrambled[held]  # labels of fold 0 turned upside down
    pred2, _ = out_of_fold_blend(gnn, trees, scrambled, groups)
    np.testing.assert_array_equal(pred[held], pred2[held])
    assert not np.array_equal(pred[~held], pred2[~held])
    assert len(weights) == 5


def test_folds_hold_whole_targets() -> None:
    _, _, groups = _val_set(n_targets=7)
    fold = target_folds(groups)
    for target in np.unique(groups):
        assert len(set(fold[groups == target])) == 1
    assert set(fold) == set(range(5))


def test_auto_ships_trees_when_they_rank_clearly_better() -> None:
    rng, true, groups = _val_set()
    gnn_logits = logit(_noisy(rng, true, 0.45))
    trees = _noisy(rng, true, 0.03)
    decision = choose_family("auto", gnn_logits, trees, true, groups)
    assert decision["scorer"].family in ("trees", "blend")
    trees_verdict = next(v for v in decision["evidence"] if v["candidate"] == "trees")
    assert trees_verdict["adopted"] and trees_verdict["ci"][1] < 0
    assert "beats the GNN" in decision["reason"]


def test_auto_keeps_the_gnn_when_the_difference_is_noise() -> None:
    rng, true, groups = _val_set()
    gnn_logits = logit(_noisy(rng, true, 0.2))
    trees = _noisy(np.random.default_rng(1), true, 0.2)  # equally good, other noise
    decision = choose_family("auto", gnn_logits, trees, true, groups)
    assert decision["scorer"].family == "gnn"
    assert all(not v["adopted"] for v in decision["evidence"])
    assert "no challenger" in decision["reason"]


def test_auto_keeps_a_clearly_better_gnn() -> None:
    rng, true, groups = _val_set()
    decision = choose_family(
        "auto", logit(_noisy(rng, true, 0.03)), _noisy(rng, true, 0.45), true, groups
    )
    assert decision["scorer"].family == "gnn"


@pytest.mark.parametrize("family", ["gnn", "trees", "blend"])
def test_a_forced_family_ships_with_its_evidence(family: str) -> None:
    rng, true, groups = _val_set()
    decision = choose_family(
        family, logit(_noisy(rng, true, 0.03)), _noisy(rng, true, 0.45), true, groups
    )
    assert decision["scorer"].family == family
    assert {c for c in decision["candidates"]} == {"gnn", "trees", "blend"}
    assert len(decision["evidence"]) == 2


def test_unknown_family_is_refused() -> None:
    _, true, groups = _val_set()
    with pytest.raises(ValueError, match=r"model\.family"):
        choose_family("forest", np.zeros(len(true)), np.zeros(len(true)), true, groups)


def test_gnn_scorer_leaves_the_networks_logits_untouched() -> None:
    logits = np.array([-3.2, 0.0, 1.7, 12.0])
    trees = np.array([0.0, 0.5, 1.0, 0.3])
    shipped = Scorer("gnn", 0.4).shipped_logits(logits, trees)
    np.testing.assert_array_equal(shipped, logits)


def test_trees_and_blend_scores_become_finite_logits() -> None:
    logits = np.array([-3.0, 0.0, 3.0])
    trees = np.array([0.0, 0.5, 1.0])  # exact 0 and 1 must not give infinite logits
    for family in ("trees", "blend"):
        shipped = Scorer(family, 0.25).shipped_logits(logits, trees)  # type: ignore[arg-type]
        assert np.isfinite(shipped).all()
    comps = Scorer("blend", 0.25).components(logits, trees)
    np.testing.assert_allclose(comps["blend"], 0.25 * comps["gnn"] + 0.75 * trees)


def test_scorer_round_trips_and_refuses_other_formats() -> None:
    scorer = Scorer("blend", 0.35)
    assert Scorer.from_dict(scorer.to_dict()) == scorer
    with pytest.raises(ValueError, match="format"):
        Scorer.from_dict({"family": "gnn", "blend_weight": 1.0})
    with pytest.raises(ValueError):
        Scorer("blend", 1.5)


# --------------------------------------------------------------------------------------------
# A small real-like profile: two-peaked labels, heavy-tailed count columns, few train graphs

REAL_LIKE = {
    "dataset.n_targets": 40,
    "dataset.models_per_target": 8,
    "dataset.label_shape": "bimodal",
    "dataset.count_columns": 3,
    "dataset.train_models_cap": 96,
    "dataset.split": {"train": 0.4, "val": 0.2, "val_calib": 0.1, "test": 0.3},
    "trainer.max_epochs": 4,
    "model.pooling_type": "mean+max",
}


@pytest.mark.slow
def test_on_a_small_real_like_profile_the_shipped_scorer_is_not_worse_than_the_best_family(
    tmp_path: Path,
) -> None:
    """The whole decision on real-like data (train, trees, scorer), then on the unseen test
    targets: the shipped family's ranking loss is not worse than the best single family's
    beyond the noise (the interval of the paired difference does not lie above zero)."""
    from graphqa.config import parse_params
    from graphqa.data import PackedSplit
    from graphqa.dataset import dataset_stage
    from graphqa.maths.evidence import mean_difference
    from graphqa.maths.metrics import resample_targets
    from graphqa.module import load_module
    from graphqa.schema import FeatureSchema, schema_stage
    from graphqa.scorer import load_pipeline_trees, packed_components, scorer_stage
    from graphqa.train import train_stage
    from graphqa.trees import trees_stage

    from .conftest import TINY_OVERRIDES, label_files

    params = parse_params({}, {**TINY_OVERRIDES, **REAL_LIKE})
    dataset_stage(cfg=params.dataset, out_dir=tmp_path / "ds")
    schema_dir = tmp_path / "schema"
    schema_stage(
        graph_dir=tmp_path / "ds" / "graphs",
        label_files=label_files(tmp_path / "ds"),
        out_dir=schema_dir,
    )
    run = tmp_path / "run"
    train_stage(params=params, schema_dir=schema_dir, run_dir=run)
    model_dir = tmp_path / "final_model"
    model_dir.mkdir()
    shutil.copyfile(run / "checkpoints" / "best.ckpt", model_dir / "model.ckpt")
    trees_stage(params=params, schema_dir=schema_dir, out_dir=tmp_path / "trees")
    record = scorer_stage(
        family="auto",
        model_dir=model_dir,
        trees_dir=tmp_path / "trees",
        schema_dir=schema_dir,
        out_dir=tmp_path / "scorer",
    )
    assert json.loads((tmp_path / "scorer" / "scorer.json").read_text()) == record
    shipped = record["family"]
    # val: a challenger replaced the GNN only if it was better beyond the noise, and a GNN kept
    # against a better-looking challenger was not worse beyond the noise
    for verdict in record["evidence"]:
        assert verdict["adopted"] == (verdict["ci"][1] is not None and verdict["ci"][1] < 0)
        if shipped == "gnn":
            assert not verdict["adopted"]
    # test: targets no decision saw
    schema = FeatureSchema.load(schema_dir / "feature_metadata.json")
    test = PackedSplit.load(schema_dir / "packed" / "test.pt")
    gnn_logits, trees_pred = packed_components(
        net=load_module(model_dir / "model.ckpt").net,
        trees=load_pipeline_trees(tmp_path / "trees", schema),
        split=test,
        schema=schema,
    )
    scorer = Scorer.from_dict(record)
    true, groups = test.y.double().numpy(), np.asarray(test.targets)
    losses = {
        name: per_target_table(pred, true, groups)["ranking_loss"].to_numpy(float)
        for name, pred in scorer.components(gnn_logits, trees_pred).items()
    }
    assert len(losses["gnn"]) >= 10  # enough test targets for an interval
    best = min(("gnn", "trees", "blend"), key=lambda n: losses[n].mean())
    resamples = resample_targets(len(losses["gnn"]))
    diff = mean_difference(losses[shipped], losses[best], resamples)
    assert diff.low <= 0, (shipped, best, diff)
