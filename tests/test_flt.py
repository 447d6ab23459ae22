"""FLT: grouping, both scoring methods, masks, the recommendation rule, pre-flight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graphqa.config import FeatureMaskConfig, Params, parse_params
from graphqa.contract import DataContractError
from graphqa.data import GraphQADataModule, PackedSplit
from graphqa.files import write_json
from graphqa.flt import _mse, flt_stage, permutation_scores, preflight, weight_magnitude_scores
from graphqa.flt_retrain import flt_retrain_stage
from graphqa.flt_summary import flt_summary_stage
from graphqa.mask import resolve_mask
from graphqa.maths.flt import (
    build_groups,
    edge_family,
    fraction_verdict,
    make_mask,
    mask_filename,
    rank_groups,
    recommend,
    repeat_summary,
    retrain_name,
    slot_of,
)
from graphqa.maths.metrics import resample_targets
from graphqa.model import NetConfig, build_net
from graphqa.schema import FeatureSchema

from .conftest import TINY_OVERRIDES, label_files


@pytest.fixture()
def schema() -> FeatureSchema:
    topo = [
        "base.h0.count",
        "base.h1.count",
        "primary.s0.h0.count",
        "primary.s1.h0.count",
        "pair.s0_s1.h0.count",
        "pair.s0_s1.h1.count",
    ]
    return FeatureSchema(
        node_columns=["rasa", "phi", *topo],
        topology_columns=topo,
        edge_columns=["distance", "hist_0", "hist_1"],
    )


def test_slot_and_edge_family_names() -> None:
    assert slot_of("base.h0.count") == "base"
    assert slot_of("primary.s0.h1.entropy") == "primary.s0"
    assert slot_of("pair.s0_s1.h0.count") == "pair.s0_s1"
    assert slot_of("pair.s0_s1_s2.x.y") == "pair.s0_s1_s2"
    assert edge_family("hist_7") == "edge.hist" and edge_family("distance") == "edge.distance"


def test_slot_mode_groups_topology_by_slot_and_edges_by_family(schema: FeatureSchema) -> None:
    groups = build_groups(schema, "slot", ["topology", "edge"])
    assert [(g.name, g.kind, len(g.columns)) for g in groups] == [
        ("base", "node", 2),
        ("primary.s0", "node", 1),
        ("primary.s1", "node", 1),
        ("pair.s0_s1", "node", 2),
        ("edge.distance", "edge", 1),
        ("edge.hist", "edge", 2),
    ]
    # The basic residue columns are kept (not a candidate) unless drop_basic.
    assert "basic" not in {g.name for g in groups}
    with_basic = build_groups(schema, "slot", ["node", "topology"], drop_basic=True)
    assert with_basic[0].name == "basic" and with_basic[0].columns == ("rasa", "phi")


def test_column_mode_makes_one_group_per_column(schema: FeatureSchema) -> None:
    groups = build_groups(schema, "column", ["topology", "edge"])
    assert len(groups) == len(schema.topology_columns) + len(schema.edge_columns)
    assert all(len(g.columns) == 1 for g in groups)
    assert {g.name for g in groups if g.kind == "edge"} == {
        "edge.distance",
        "edge.hist_0",
        "edge.hist_1",
    }


def test_weight_magnitude_sums_first_layer_over_group_columns(schema: FeatureSchema) -> None:
    net = build_net(
        NetConfig(
            node_dim=schema.node_dim,
            edge_dim=schema.edge_dim,
            hidden_dim=4,
            heads=1,
            node_keep=[0, 1, 2, 3, 4, 5],
        )
    )  # pair.s0_s1 pruned
    with torch.no_grad():
        net.node_encoder.weight.copy_(torch.tensor([[1.0, -2, 3, -4, 5, 6]]).repeat(4, 1))
        net.edge_encoder[0].weight.fill_(-0.5)
    groups = build_groups(schema, "slot", ["topology", "edge"])
    scores = weight_magnitude_scores(net, schema, groups)
    assert scores["base"]["score"] == pytest.approx(4 * (3 + 4))
    assert scores["primary.s1"]["score"] == pytest.approx(4 * 6)
    assert scores["pair.s0_s1"]["score"] == 0.0  # the model never saw these columns
    assert scores["edge.hist"]["score"] == pytest.approx(4 * 2 * 0.5)
    assert scores["edge.hist"]["per_column"] == pytest.approx(4 * 0.5)


def test_packed_mse_matches_the_training_loader(tiny_schema_dir: Path) -> None:
    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    net = build_net(
        NetConfig(node_dim=schema.node_dim, edge_dim=schema.edge_dim, hidden_dim=8, heads=2)
    ).eval()
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    net.fit_standardizers(val.x, val.edge_attr)
    loader = GraphQADataModule(tiny_schema_dir / "packed", batch_size=5).val_dataloader()
    with torch.no_grad():
        sq = [
            (
                torch.sigmoid(net(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)).double()
                - b.y.double()
            )
            ** 2
            for b in loader
        ]
    expected = float(torch.cat(sq).mean())
    assert _mse(net, val, val.x, val.edge_attr, batch_graphs=7) == pytest.approx(expected, rel=1e-6)


def test_permutation_scores_only_columns_the_model_uses(tiny_schema_dir: Path) -> None:
    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    used = [i for i, c in enumerate(schema.node_columns) if not c.startswith("primary.s1.")]
    net = build_net(
        NetConfig(
            node_dim=schema.node_dim,
            edge_dim=schema.edge_dim,
            hidden_dim=8,
            heads=2,
            node_keep=used,
        )
    ).eval()
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    net.fit_standardizers(val.x, val.edge_attr)
    groups = [
        g for g in build_groups(schema, "slot", ["topology"]) if g.name in {"primary.s1", "base"}
    ]
    scores = permutation_scores(net, schema, val, groups, repeats=2, seed=0)
    assert scores["primary.s1"]["score"] == 0.0 and scores["primary.s1"]["sd"] == 0.0
    assert scores["primary.s1"]["ci95"] == [0.0, 0.0]
    base = scores["base"]
    assert base["score"] != 0.0 and len(base["repeats"]) == 2
    assert base["mean"] == base["score"]
    assert base["ci95"][0] < base["score"] < base["ci95"][1]
    assert scores == permutation_scores(net, schema, val, groups, repeats=2, seed=0)


def test_masks_keep_top_groups_per_kind_and_all_non_candidates(
    schema: FeatureSchema, tmp_path: Path
) -> None:
    groups = build_groups(schema, "slot", ["topology", "edge"])
    scores = {
        "base": 0.5,
        "primary.s0": 0.9,
        "primary.s1": -0.1,
        "pair.s0_s1": 0.2,
        "edge.distance": 0.01,
        "edge.hist": 0.3,
    }
    ranked = rank_groups(groups, {k: {"score": v} for k, v in scores.items()})
    assert [r["group"] for r in ranked][:2] == ["primary.s0", "base"]
    mask = make_mask(schema, groups, ranked, 0.5)
    assert [g["group"] for g in mask["kept_groups"]] == ["primary.s0", "base", "edge.hist"]
    assert mask["node_columns"] == [
        "rasa",
        "phi",
        "base.h0.count",
        "base.h1.count",
        "primary.s0.h0.count",
    ]
    assert mask["edge_columns"] == ["hist_0", "hist_1"]
    assert set(mask["dropped_groups"]) == {"primary.s1", "pair.s0_s1", "edge.distance"}
    tiny = make_mask(schema, groups, ranked, 0.01)  # still one group of each kind
    assert [g["group"] for g in tiny["kept_groups"]] == ["primary.s0", "edge.hist"]
    full = make_mask(schema, groups, ranked, 1.0)
    assert full["node_columns"] == schema.node_columns
    # The mask file is what training reads through feature_mask.
    path = tmp_path / mask_filename(0.5)
    write_json(path, mask)
    resolved = resolve_mask(schema, FeatureMaskConfig(path=str(path)))
    assert resolved.node_keep == [0, 1, 2, 3, 4] and resolved.edge_keep == [1, 2]
    assert path.name == "flt_mask_keep_0.5.json"


def test_repeat_summary_is_a_t_interval_of_the_mean() -> None:
    got = repeat_summary([1.0, 2.0, 3.0])
    # mean 2, sample sd 1, t(0.975, 2 df) = 4.302653: half width 4.302653 / sqrt(3)
    assert got["mean"] == 2.0 and got["sd"] == pytest.approx(1.0)
    assert got["ci95"] == pytest.approx([2 - 2.484138, 2 + 2.484138], abs=1e-6)
    assert repeat_summary([0.5]) == {"mean": 0.5, "sd": None, "ci95": None}


def _row(frac: float, adopted: bool) -> dict[str, Any]:
    return {"keep_fraction": frac, "adopted": adopted}


def test_recommendation_is_the_smallest_adopted_fraction() -> None:
    rows = [_row(1.0, True), _row(0.7, True), _row(0.5, False), _row(0.3, True)]
    rec = recommend(rows, loss_tolerance=0.01, spearman_tolerance=0.01)
    assert rec["keep_fraction"] == 0.3 and rec["mask"] == "flt_mask_keep_0.3.json"
    assert rec["qualifying"] == [0.3, 0.7, 1.0]
    assert "upper bound" in rec["rule"] and "lower bound" in rec["rule"]
    none = [_row(1.0, True), _row(0.5, False), _row(0.3, False)]
    assert recommend(none)["keep_fraction"] == 1.0
    assert recommend(none)["mask"] == "flt_mask_keep_1.0.json"
    # the baseline is the reference, whatever its own flag says
    assert recommend([_row(1.0, False), _row(0.5, False)])["keep_fraction"] == 1.0


def test_preflight_names_missing_or_disagreeing_column_files(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    for name in ("node_columns.json", "edge_columns.json", "topology_columns.json"):
        shutil.copy(tiny_dataset / "graphs" / name, graphs / name)
    meta = json.loads((tiny_dataset / "graphs" / "graph_metadata.json").read_text())
    schema = FeatureSchema(
        node_columns=meta["_node_schema"]["columns"],
        edge_columns=meta["_edge_schema"]["columns"],
        topology_columns=meta["_topology_schema"]["columns"],
    )
    preflight(graphs, schema)
    (graphs / "topology_columns.json").unlink()
    with pytest.raises(DataContractError, match=r"topology_columns\.json"):
        preflight(graphs, schema)
    shutil.copy(tiny_dataset / "graphs" / "topology_columns.json", graphs)
    write_json(graphs / "edge_columns.json", ["distance"])
    with pytest.raises(DataContractError, match=r"edge_columns\.json"):
        preflight(graphs, schema)


@pytest.mark.slow
def test_permutation_scoring_recovers_the_planted_signal_groups(tmp_path: Path) -> None:
    """A small trained model: every signal group of the generator's ground truth ranks above
    every pure-noise group, and the smallest mask keeps exactly the signal groups."""
    from graphqa.config import parse_params
    from graphqa.dataset import dataset_stage
    from graphqa.module import load_module
    from graphqa.schema import schema_stage
    from graphqa.train import train_stage

    params = parse_params(
        {},
        {
            "dataset.n_targets": 24,
            "dataset.models_per_target": 24,
            "dataset.min_nodes": 10,
            "dataset.max_nodes": 24,
            "dataset.knn": 4,
            "dataset.seed": 3,
            "dataloader.seed": 3,
            "model.hidden_dim": 16,
            "model.attention_head": 1,
            "model.num_layers": 1,
            "dataloader.batch_size": 16,
            "trainer.max_epochs": 20,
            "trainer.num_threads": 2,
            "optimizer.learning_rate": 0.01,
            "optimizer.weight_decay": 0.05,
            "early_stopping.enabled": False,
            "logging.progress": "none",
        },
    )
    dataset_stage(cfg=params.dataset, out_dir=tmp_path / "ds")
    labels = {
        s: str(tmp_path / "ds" / "labels" / f"{s}.csv")
        for s in ("train", "val", "val_calib", "test")
    }
    schema_stage(
        graph_dir=tmp_path / "ds" / "graphs", label_files=labels, out_dir=tmp_path / "schema"
    )
    train_stage(params=params, schema_dir=tmp_path / "schema", run_dir=tmp_path / "run")
    truth = json.loads((tmp_path / "ds" / "ground_truth.json").read_text())
    schema = FeatureSchema.load(tmp_path / "schema" / "feature_metadata.json")
    net = load_module(tmp_path / "run" / "checkpoints" / "best.ckpt").net
    groups = build_groups(schema, "slot", ["node", "topology", "edge"], drop_basic=True)
    val = PackedSplit.load(tmp_path / "schema" / "packed" / "val.pt")
    scores = permutation_scores(net, schema, val, groups, repeats=3, seed=0)
    signal = [g for g in truth["signal_groups"] if g in scores]
    noise = truth["noise_groups"]
    assert set(signal) == {"basic", "base", "primary.s0", "pair.s0_s1", "edge.hist"}
    weakest_signal = min(scores[g]["score"] for g in signal)
    strongest_noise = max(scores[g]["score"] for g in noise)
    assert weakest_signal > strongest_noise, scores

    topo_edge = build_groups(schema, "slot", ["topology", "edge"])
    ranked = rank_groups(topo_edge, {g.name: scores[g.name] for g in topo_edge})
    smallest = make_mask(schema, topo_edge, ranked, 0.3)  # 3 of 7 slots, 1 of 2 edge groups
    assert {g["group"] for g in smallest["kept_groups"]} == set(signal) - {"basic"}


# --------------------------------------------------------------------------------------------
# The verdict behind the recommendation, on scripted per-target values [seeds, targets]

SEEDS, TARGETS = 3, 12
# Per-target val loss and Spearman of the unpruned retrain: targets differ, and so do seeds
# (seed-to-seed spread 0.003 in loss: ten times the tolerance of 1 % of ~0.02).
REF_LOSS = np.array([[0.01 + 0.002 * t + 0.003 * s for t in range(TARGETS)] for s in range(SEEDS)])
REF_RHO = np.array([[0.4 + 0.04 * t - 0.05 * s for t in range(TARGETS)] for s in range(SEEDS)])
# A zero-mean pattern over targets (and opposite on alternate seeds).
SIGN = np.array([[(-1.0) ** (t + s) for t in range(TARGETS)] for s in range(SEEDS)])


def verdict(
    loss: np.ndarray, rho: np.ndarray, bootstrap_seed: int = 0, tolerance: float = 0.01
) -> dict[str, Any]:
    return fraction_verdict(
        loss_reference=REF_LOSS,
        loss_fraction=loss,
        spearman_reference=REF_RHO,
        spearman_fraction=rho,
        resamples=resample_targets(TARGETS, 2000, bootstrap_seed),
        loss_tolerance=tolerance,
        spearman_tolerance=tolerance,
    )


def test_identical_fraction_is_adopted_with_a_zero_interval() -> None:
    got = verdict(REF_LOSS.copy(), REF_RHO.copy())
    assert got["adopted"]
    loss, rho = got["rel_loss_increase"], got["target_spearman_diff"]
    assert (loss.estimate, loss.low, loss.high) == (0.0, 0.0, 0.0)
    assert (rho.estimate, rho.low, rho.high) == (0.0, 0.0, 0.0)


def test_clearly_worse_fraction_is_rejected() -> None:
    # 10 % more loss on every target of every seed: the relative increase is exactly 0.1.
    worse_loss = verdict(REF_LOSS * 1.1, REF_RHO.copy())
    assert not worse_loss["adopted"]
    loss = worse_loss["rel_loss_increase"]
    assert loss.estimate == pytest.approx(0.1)
    assert loss.low == pytest.approx(0.1) and loss.high == pytest.approx(0.1)
    assert "not <= 0.01" in worse_loss["reason"]
    # Same loss, 0.05 less Spearman on every target: rejected on Spearman alone.
    worse_rho = verdict(REF_LOSS.copy(), REF_RHO - 0.05)
    assert not worse_rho["adopted"]
    assert worse_rho["target_spearman_diff"].high == pytest.approx(-0.05)
    assert "not >= -0.01" in worse_rho["reason"]


def test_noisy_but_equal_fraction_gives_the_same_decision_under_every_bootstrap_seed() -> None:
    # +-20 % per target, zero mean: the point estimate is near 0 (a point rule would adopt),
    # but the evidence cannot exclude a 1 % loss increase, whatever the resamples.
    noisy = [verdict(REF_LOSS * (1 + 0.2 * SIGN), REF_RHO + 0.2 * SIGN, seed) for seed in range(8)]
    assert abs(noisy[0]["rel_loss_increase"].estimate) < 0.01
    assert abs(noisy[0]["target_spearman_diff"].estimate) < 0.01
    assert not any(v["adopted"] for v in noisy)
    assert all(v["rel_loss_increase"].high > 0.01 for v in noisy)
    # +-0.05 % per target: tight enough to show non-inferiority, under every bootstrap seed.
    quiet = [
        verdict(REF_LOSS * (1 + 0.0005 * SIGN), REF_RHO + 0.0005 * SIGN, seed) for seed in range(8)
    ]
    assert all(v["adopted"] for v in quiet)


def test_tolerance_decides_a_small_consistent_loss_increase() -> None:
    slightly = REF_LOSS * 1.005  # +0.5 % everywhere
    assert verdict(slightly, REF_RHO.copy(), tolerance=0.01)["adopted"]
    assert not verdict(slightly, REF_RHO.copy(), tolerance=0.001)["adopted"]


# --------------------------------------------------------------------------------------------
# Two seeds of the whole FLT run (scores, masks, retrains over flt.seeds, summary)

# Small but not toy: 40 targets (12 on val), 10 models each, 10 epochs; keep 0.3 is exactly the
# planted signal groups when the ranking is right, keep 0.15 drops one of them.
FLT_PROFILE = {
    **TINY_OVERRIDES,
    "dataset.n_targets": 40,
    "dataset.models_per_target": 10,
    "dataset.split": {"train": 0.5, "val": 0.3, "val_calib": 0.1, "test": 0.1},
    "trainer.max_epochs": 10,
    "optimizer.learning_rate": 0.01,
    "flt.keep_fracs": [1.0, 0.3, 0.15],
    "flt.permutation_repeats": 2,
}


def whole_flt_run(params: Params, schema: Path, selection: Path, out: Path) -> dict[str, Any]:
    """What `dvc repro flt flt_retrain flt_summary` runs, in one process."""
    winner = selection / "winner" / "model.ckpt"
    flt_stage(params=params, schema_dir=schema, model_path=winner, out_dir=out / "flt")
    for frac in params.flt.keep_fracs:
        for seed in params.flt.seeds:
            flt_retrain_stage(
                params=params,
                keep_frac=frac,
                seed=seed,
                flt_dir=out / "flt",
                selection_dir=selection,
                schema_dir=schema,
                out_dir=out / "retrain" / retrain_name(frac, seed),
            )
    return flt_summary_stage(
        params=params,
        flt_dir=out / "flt",
        retrain_root=out / "retrain",
        schema_dir=schema,
        out_dir=out / "summary",
    )


def single_seed_point_rule(rec: dict[str, Any], seed_index: int) -> float:
    """The old recommendation: one seed's val_loss within 1 % and val Spearman within 0.01."""
    rows = [(f["keep_fraction"], f["per_seed"][seed_index]) for f in rec["fractions"]]
    _, base = rows[0]
    return min(
        frac
        for frac, run in rows
        if run["val_loss"] <= base["val_loss"] * 1.01
        and run["val_spearman"] >= base["val_spearman"] - 0.01
    )


@pytest.mark.slow
def test_recommendation_is_stable_across_two_seeds_of_the_whole_flt_run(tmp_path: Path) -> None:
    from graphqa.dataset import dataset_stage
    from graphqa.schema import schema_stage
    from graphqa.selection import selection_stage
    from graphqa.train import train_stage

    base = parse_params({}, FLT_PROFILE)
    dataset_stage(cfg=base.dataset, out_dir=tmp_path / "ds")
    schema_stage(
        graph_dir=tmp_path / "ds" / "graphs",
        label_files=label_files(tmp_path / "ds"),
        out_dir=tmp_path / "schema",
    )
    profile = {**FLT_PROFILE, "paths.graph_dir": str(tmp_path / "ds" / "graphs")}
    sweep = parse_params({}, profile)
    train_stage(params=sweep, schema_dir=tmp_path / "schema", run_dir=tmp_path / "train" / "0-base")
    selection_stage(params=sweep, train_root=tmp_path / "train", out_dir=tmp_path / "selection")

    recs = []
    for run, (flt_seed, seeds) in enumerate([(0, [0, 1, 2]), (1, [3, 4, 5])]):
        params = parse_params({}, {**profile, "flt.seed": flt_seed, "flt.seeds": seeds})
        recs.append(
            whole_flt_run(params, tmp_path / "schema", tmp_path / "selection", tmp_path / f"{run}")
        )

    # The profile is as noisy as the issue measured: one seed's point rule disagrees with
    # another seed's of the same run (if this fails, the profile no longer shows the noise).
    point = {single_seed_point_rule(rec, i) for rec in recs for i in range(3)}
    assert len(point) > 1, f"single-seed point rule agreed everywhere: {point}"
    # The evidence rule gives one answer for both whole runs.
    assert recs[0]["keep_fraction"] == recs[1]["keep_fraction"], [
        [(f["keep_fraction"], f["verdict"], f["reason"]) for f in rec["fractions"]] for rec in recs
    ]

    signal = set(json.loads((tmp_path / "ds" / "ground_truth.json").read_text())["signal_groups"])
    for run, rec in enumerate(recs):
        out = tmp_path / f"{run}"
        mask = json.loads((out / "flt" / rec["mask"]).read_text())
        kept = {g["group"] for g in mask["kept_groups"]}
        assert kept >= signal - {"basic", "structure"}  # every scored signal group is kept
        # keep 0.15 drops a signal group: its loss increase is excluded from zero.
        drop = next(f for f in rec["fractions"] if f["keep_fraction"] == 0.15)
        assert drop["verdict"] == "rejected" and drop["rel_loss_increase"]["ci"][0] > 0
        assert rec["run"] in {retrain_name(rec["keep_fraction"], s) for s in rec["seeds"]}
        # What a reader sees: mean ± sd and the interval behind each verdict.
        table = (out / "summary" / "flt_summary.csv").read_text().splitlines()
        assert table[0].startswith("keep_fraction,seed,")
        for column in ("val_loss_sd", "rel_loss_ci_high", "target_spearman_diff_ci_low"):
            assert column in table[0]
        assert sum(",mean," in line for line in table) == 3  # one per fraction
        assert len(table) == 1 + 3 * (3 + 1)  # and one row per seed
        scores = json.loads((out / "flt" / "flt_group_scores.json").read_text())
        assert all(len(r["ci95"]) == 2 and r["sd"] is not None for r in scores["ranked"])
        metrics = json.loads((out / "summary" / "metrics.json").read_text())
        assert metrics["flt_recommended_keep"] == rec["keep_fraction"]
        assert metrics["flt_recommended_val_loss_sd"] is not None
