"""FLT: grouping, both scoring methods, masks, the recommendation rule, pre-flight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from graphqa.config import FeatureMaskConfig
from graphqa.contract import DataContractError, write_json
from graphqa.data import GraphQADataModule, PackedSplit
from graphqa.flt import (
    _mse,
    build_groups,
    edge_family,
    make_mask,
    mask_filename,
    permutation_scores,
    preflight,
    rank_groups,
    recommend,
    slot_of,
    weight_magnitude_scores,
)
from graphqa.mask import resolve_mask
from graphqa.model import NetConfig, build_net
from graphqa.schema import FeatureSchema


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
    assert scores["primary.s1"]["score"] == 0.0 and scores["primary.s1"]["std"] == 0.0
    assert scores["base"]["score"] != 0.0 and len(scores["base"]["repeats"]) == 2
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


def _row(frac: float, loss: float, rho: float) -> dict[str, float]:
    return {"keep_fraction": frac, "val_loss": loss, "val_spearman": rho}


def test_recommendation_is_smallest_fraction_within_both_tolerances() -> None:
    rows = [
        _row(1.0, 0.0100, 0.900),
        _row(0.7, 0.0100, 0.905),
        _row(0.5, 0.01009, 0.891),
        _row(0.3, 0.0105, 0.899),
    ]
    rec = recommend(rows, loss_tolerance=0.01, spearman_tolerance=0.01)
    assert rec["keep_fraction"] == 0.5  # 0.3 breaks the loss tolerance
    assert rec["qualifying"] == [0.5, 0.7, 1.0]
    strict = recommend(rows, loss_tolerance=0.01, spearman_tolerance=0.005)
    assert strict["keep_fraction"] == 0.7  # 0.5 loses 0.009 Spearman
    worse = [_row(1.0, 0.01, 0.9), _row(0.5, 0.02, 0.5)]
    assert recommend(worse)["keep_fraction"] == 1.0
    assert recommend(worse)["mask"] == "flt_mask_keep_1.0.json"


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
    from graphqa.dataset import generate_dataset
    from graphqa.schema import check_dataset
    from graphqa.train import load_module, train_run

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
    generate_dataset(cfg=params.dataset, out_dir=tmp_path / "ds")
    labels = {
        s: str(tmp_path / "ds" / "labels" / f"{s}.csv")
        for s in ("train", "val", "val_calib", "test")
    }
    check_dataset(
        graph_dir=tmp_path / "ds" / "graphs", label_files=labels, out_dir=tmp_path / "schema"
    )
    train_run(params=params, schema_dir=tmp_path / "schema", run_dir=tmp_path / "run")
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
