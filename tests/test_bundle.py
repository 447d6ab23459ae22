"""Bundle round trip, tamper refusal, byte-identical rebuilds; predict and its CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from graphqa.bundle import (
    build_bundle,
    input_provenance,
    load_bundle,
    mask_from_config,
    sha256_file,
    verify_bundle,
)
from graphqa.cli import main
from graphqa.contract import DataContractError, save_graph
from graphqa.data import PackedSplit
from graphqa.files import write_json
from graphqa.module import load_module
from graphqa.predict import predict_with_bundle, stream_logits
from graphqa.scorer import Scorer
from graphqa.scoring import packed_logits

CALIBRATION = {
    "method": "temperature",
    "temperature": {"temperature": 1.5, "bias": -0.1},
    "isotonic": {"x": [0.0, 1.0], "y": [0.0, 1.0]},
    "conformal": {"coverage": 0.9, "half_width": 0.1},
}
THRESHOLDS = {"threshold": 0.3, "criterion": "f1"}


def _build(tiny_run: Path, tiny_schema_dir: Path, tmp: Path, out: Path, **extra: Path) -> dict:
    """A bundle of the tiny run; ``extra`` passes ``trees_model``/``scorer`` through."""
    write_json(tmp / "calibration.json", CALIBRATION)
    write_json(tmp / "thresholds.json", THRESHOLDS)
    summary = json.loads((tiny_run / "summary.json").read_text())
    return build_bundle(
        model_ckpt=tiny_run / "checkpoints" / "best.ckpt",
        feature_metadata=tiny_schema_dir / "feature_metadata.json",
        calibration=tmp / "calibration.json",
        thresholds=tmp / "thresholds.json",
        params=summary["params"],
        provenance={"source": "test"},
        metrics={"val": summary["metrics"]},
        out_dir=out,
        **extra,
    )


@pytest.fixture(scope="module")
def bundle_dir(
    tiny_run: Path, tiny_schema_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    _build(tiny_run, tiny_schema_dir, tmp, tmp / "bundle")
    return tmp / "bundle"


def test_bundle_round_trip_gives_the_checkpoint_predictions(
    bundle_dir: Path, tiny_run: Path, tiny_schema_dir: Path
) -> None:
    bundle = load_bundle(bundle_dir)
    module = load_module(tiny_run / "checkpoints" / "best.ckpt")
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    assert torch.equal(packed_logits(bundle.net, val), packed_logits(module.net, val))
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    assert set(manifest["files"]) == {p.name for p in bundle_dir.iterdir()} - {"bundle.json"}
    assert {
        "model.safetensors",
        "model_config.json",
        "feature_metadata.json",
        "calibration.json",
        "thresholds.json",
        "params.json",
        "provenance.json",
        "metrics.json",
    } <= set(manifest["files"])
    text = "".join(p.read_text() for p in bundle_dir.glob("*.json"))
    assert str(tiny_run.parent) not in text and str(tiny_schema_dir) not in text


def test_two_builds_are_byte_identical(
    bundle_dir: Path, tiny_run: Path, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    _build(tiny_run, tiny_schema_dir, tmp_path, tmp_path / "again")
    for path in bundle_dir.iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("tamper", ["edit", "delete", "extra"])
def test_tampered_bundle_is_refused(bundle_dir: Path, tmp_path: Path, tamper: str) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    if tamper == "edit":
        data = json.loads((copy / "calibration.json").read_text())
        data["conformal"]["half_width"] = 0.0
        write_json(copy / "calibration.json", data)
        match = "calibration.json.*sha256"
    elif tamper == "delete":
        (copy / "thresholds.json").unlink()
        match = "thresholds.json.*missing"
    else:
        (copy / "evil.py").write_text("print('hi')")
        match = "unlisted.*evil.py"
    with pytest.raises(DataContractError, match=match):
        load_bundle(copy)


def test_schema_mismatch_is_refused_naming_the_dims(bundle_dir: Path, tmp_path: Path) -> None:
    graphs = tmp_path / "graphs"
    save_graph(_graph(7, 3), graphs / "X1" / "X1_a.pt")
    with pytest.raises(DataContractError, match="node dim 172 != 7"):
        predict_with_bundle(bundle_dir, graphs)


def _graph(node_dim: int, edge_dim: int) -> Data:
    ei = torch.tensor([[0, 1], [1, 0]])
    return Data(x=torch.rand(2, node_dim), edge_index=ei, edge_attr=torch.rand(2, edge_dim))


def test_predict_scores_calibrates_ranks_and_reports(bundle_dir: Path, tiny_dataset: Path) -> None:
    labels = tiny_dataset / "labels" / "test.csv"
    frame, report = predict_with_bundle(bundle_dir, tiny_dataset / "graphs", labels, batch_size=4)
    truth = pd.read_csv(labels)
    assert sorted(frame["MODEL"]) == sorted(truth["MODEL"])
    t = CALIBRATION["temperature"]
    logit = np.log(frame["pred_raw"] / (1 - frame["pred_raw"]))
    expected = 1 / (1 + np.exp(-(logit / t["temperature"] + t["bias"])))
    assert np.allclose(frame["pred_calibrated"], expected, atol=1e-6)
    assert np.allclose(
        frame["interval_high"] - frame["interval_low"],
        np.minimum(frame["pred_calibrated"] + 0.1, 1)
        - np.maximum(frame["pred_calibrated"] - 0.1, 0),
    )
    assert (frame["acceptable"] == (frame["pred_calibrated"] >= 0.3)).all()
    for _, group in frame.groupby("TARGET"):
        top = group.loc[group["rank_in_target"] == 1]
        assert top["pred_calibrated"].iloc[0] == group["pred_calibrated"].max()
        assert sorted(group["rank_in_target"]) == list(range(1, len(group) + 1))
    assert set(report["metrics"]) >= {
        "n_targets",
        "mse",
        "mae",
        "pearson",
        "spearman_pooled",
        "spearman_per_target_mean",
        "ranking_loss",
        "hits_023",
        "hits_049",
        "hits_080",
    }
    # a bundle from before target-grouped intervals reads as a plain split interval
    assert report["interval"]["method"] == "split" and not report["interval"]["guaranteed"]
    assert report["graphs"] == len(truth) and report["graphs_per_s"] > 0


def test_stream_reads_graphs_a_batch_at_a_time(
    bundle_dir: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphqa.predict as predict

    bundle = load_bundle(bundle_dir)
    refs, _ = predict.graph_refs(tiny_dataset / "graphs")
    loads: list[int] = []
    real = predict.load_graph
    monkeypatch.setattr(predict, "load_graph", lambda p: loads.append(1) or real(p))
    seen = 0
    for chunk, logits in stream_logits(bundle.net, refs, bundle.schema, batch_size=5):
        seen += len(chunk)
        assert len(loads) == seen  # nothing read ahead of the batch being scored
        assert len(chunk) <= 5 and len(logits) == len(chunk)
    assert seen == len(refs)


def test_predict_cli_writes_csv(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "predict",
                "--bundle",
                str(bundle_dir),
                "--graphs",
                str(tiny_dataset / "graphs"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    frame = pd.read_csv(out)
    assert list(frame.columns) == [
        "TARGET",
        "MODEL",
        "pred_gnn",
        "pred_raw",
        "pred_calibrated",
        "interval_low",
        "interval_high",
        "acceptable",
        "rank_in_target",
    ]
    assert len(frame) == len(list((tiny_dataset / "graphs").rglob("*.pt")))
    assert "graphs_per_s" in capsys.readouterr().err
    copy = tmp_path / "tampered"
    shutil.copytree(bundle_dir, copy)
    (copy / "metrics.json").write_text("{}")
    assert main(["predict", "--bundle", str(copy), "--graphs", str(tiny_dataset / "graphs")]) == 2


def test_provenance_hashes_the_files_the_bundle_reads(tmp_path: Path) -> None:
    (tmp_path / "a.ckpt").write_bytes(b"weights")
    prov = input_provenance({"model.ckpt": tmp_path / "a.ckpt"}, {"data_sha256": {"x": "1"}})
    assert prov["inputs_sha256"] == {"model.ckpt": sha256_file(tmp_path / "a.ckpt")}
    assert prov["training"] == {"data_sha256": {"x": "1"}}


def test_a_masked_model_ships_its_mask_derived_from_the_network(
    tiny_run: Path, tiny_schema_dir: Path
) -> None:
    from dataclasses import replace

    from graphqa.schema import FeatureSchema

    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    config = load_module(tiny_run / "checkpoints" / "best.ckpt").net.config
    assert mask_from_config(config, schema) is None  # unmasked: no mask file
    masked = replace(config, node_keep=[0, 2], edge_keep=[1])
    mask = mask_from_config(masked, schema)
    assert mask["node_columns"] == [schema.node_columns[0], schema.node_columns[2]]
    assert mask["edge_columns"] == [schema.edge_columns[1]]


def test_verify_bundle_returns_the_manifest(bundle_dir: Path) -> None:
    manifest = verify_bundle(bundle_dir)
    assert manifest["format"] == "graphqa.bundle/1" and "model.safetensors" in manifest["files"]


# --------------------------------------------------------------------------------------------
# Bundles that carry the trees (stage `trees`) and the shipped-scorer choice (stage `scorer`)


@pytest.fixture(scope="module")
def trees_bundle_dir(
    tiny_run: Path,
    tiny_schema_dir: Path,
    tiny_trees_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    tmp = tmp_path_factory.mktemp("trees_bundle")
    write_json(tmp / "scorer.json", Scorer("trees", 0.3).to_dict())
    _build(
        tiny_run,
        tiny_schema_dir,
        tmp,
        tmp / "bundle",
        trees_model=tiny_trees_dir / "model.txt",
        scorer=tmp / "scorer.json",
    )
    return tmp / "bundle"


def test_a_trees_bundle_ships_the_tree_score_and_every_component(
    trees_bundle_dir: Path, tiny_dataset: Path, tiny_trees_dir: Path, tiny_schema_dir: Path
) -> None:
    from graphqa.pooled import pooled_feature_names, pooled_split
    from graphqa.schema import FeatureSchema
    from graphqa.trees import load_trees

    bundle = load_bundle(trees_bundle_dir)
    assert bundle.scorer.family == "trees" and bundle.components == ("gnn", "trees", "blend")
    frame, report = predict_with_bundle(trees_bundle_dir, tiny_dataset / "graphs")
    assert report["shipped"] == "trees"
    assert {"pred_gnn", "pred_trees", "pred_blend"} <= set(frame.columns)
    np.testing.assert_allclose(frame["pred_raw"], frame["pred_trees"].clip(1e-6, 1 - 1e-6))
    # the tree score is the stage's own model on the same graphs' pooled features
    schema = FeatureSchema.load(tiny_schema_dir / "feature_metadata.json")
    summary = json.loads((tiny_trees_dir / "summary.json").read_text())
    trees = load_trees(
        tiny_trees_dir / "model.txt", summary["model_sha256"], pooled_feature_names(schema)
    )
    val = PackedSplit.load(tiny_schema_dir / "packed" / "val.pt")
    by_model = dict(zip(frame["MODEL"], frame["pred_trees"], strict=True))
    expected = trees.predict(pooled_split(val, schema))
    got = np.array([by_model[m] for m in val.models])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_a_tampered_tree_model_is_refused(trees_bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trees_bundle_dir, copy)
    text = (copy / "trees.txt").read_text()
    (copy / "trees.txt").write_text(text.replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(DataContractError, match=r"trees.txt.*sha256"):
        load_bundle(copy)


def test_trees_for_another_schema_are_refused(
    trees_bundle_dir: Path, tmp_path: Path, tiny_schema_dir: Path
) -> None:
    """Trees fitted on other columns must not score this schema's graphs, even when the
    manifest was rewritten to match (the check is on the model's own feature names)."""
    copy = tmp_path / "bundle"
    shutil.copytree(trees_bundle_dir, copy)
    meta = json.loads((copy / "feature_metadata.json").read_text())
    text = json.dumps(meta)
    first = FeatureSchemaColumns.first_node_column(tiny_schema_dir)
    (copy / "feature_metadata.json").write_text(text.replace(f'"{first}"', '"renamed_col"', 1))
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"]["feature_metadata.json"] = sha256_file(copy / "feature_metadata.json")
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(DataContractError, match=r"trees.txt"):
        load_bundle(copy)


def test_a_scorer_that_needs_trees_without_them_is_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    write_json(copy / "scorer.json", Scorer("blend", 0.5).to_dict())
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"]["scorer.json"] = sha256_file(copy / "scorer.json")
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(DataContractError, match=r"trees.txt.*blend"):
        load_bundle(copy)


class FeatureSchemaColumns:
    @staticmethod
    def first_node_column(schema_dir: Path) -> str:
        from graphqa.schema import FeatureSchema

        return FeatureSchema.load(schema_dir / "feature_metadata.json").node_columns[0]
