"""resolve_mask on a hand-built schema with mask files written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graphqa.config import FeatureMaskConfig
from graphqa.contract import DataContractError
from graphqa.mask import ResolvedMask, resolve_mask
from graphqa.model import NetConfig, build_net
from graphqa.schema import FeatureSchema

NODE = ["rasa", "phi", "base.a", "base.b", "primary.s0.a"]
TOPO = ["base.a", "base.b", "primary.s0.a"]
EDGE = ["distance", "hist_0"]
ALL_KINDS = ["node", "edge", "topology"]


@pytest.fixture
def schema() -> FeatureSchema:
    return FeatureSchema(
        node_columns=list(NODE), edge_columns=list(EDGE), topology_columns=list(TOPO)
    )


def _mask(tmp_path: Path, **content: Any) -> str:
    path = tmp_path / "feature_mask.json"
    path.write_text(json.dumps({"provenance": {"stage": "flt"}, **content}))
    return str(path)


def _cfg(
    path: str | None, apply_to: list[str] | None = None, strict: bool = True
) -> FeatureMaskConfig:
    return FeatureMaskConfig(path=path, apply_to=apply_to or ALL_KINDS, strict=strict)


def test_schema_basic_columns(schema: FeatureSchema) -> None:
    assert schema.basic_columns == ["rasa", "phi"]
    assert (schema.node_dim, schema.edge_dim, schema.topology_dim) == (5, 2, 3)


def test_no_path_is_identity(schema: FeatureSchema) -> None:
    resolved = resolve_mask(schema, FeatureMaskConfig())
    assert resolved == ResolvedMask(None, None)
    assert resolved.is_identity


def test_mask_keeping_everything_is_identity(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=list(reversed(NODE)), edge_columns=EDGE)
    assert resolve_mask(schema, _cfg(path)).is_identity


def test_all_kinds_governed(schema: FeatureSchema, tmp_path: Path) -> None:
    # order of the kept indices follows the schema, not the mask file
    path = _mask(tmp_path, node_columns=["base.a", "rasa"], edge_columns=["hist_0"])
    resolved = resolve_mask(schema, _cfg(path))
    assert resolved.node_keep == [0, 2]
    assert resolved.edge_keep == [1]
    assert not resolved.is_identity


def test_apply_to_topology_keeps_basic_columns(schema: FeatureSchema, tmp_path: Path) -> None:
    # rasa/phi are absent from the mask but only topology columns are governed
    path = _mask(tmp_path, node_columns=["base.b"], edge_columns=["distance"])
    resolved = resolve_mask(schema, _cfg(path, ["topology"]))
    assert resolved.node_keep == [0, 1, 3]
    assert resolved.edge_keep is None


def test_apply_to_node_keeps_topology_columns(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["phi"], edge_columns=["distance"])
    resolved = resolve_mask(schema, _cfg(path, ["node"]))
    assert resolved.node_keep == [1, 2, 3, 4]
    assert resolved.edge_keep is None


def test_apply_to_edge_leaves_node_columns(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["rasa"], edge_columns=["distance"])
    resolved = resolve_mask(schema, _cfg(path, ["edge"]))
    assert resolved.node_keep is None
    assert resolved.edge_keep == [0]


def test_missing_keys_keep_all_columns(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["rasa", "base.b"])
    resolved = resolve_mask(schema, _cfg(path))
    assert resolved.node_keep == [0, 3]
    assert resolved.edge_keep is None


def test_strict_unknown_column_raises(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["rasa", "not_a_column"], edge_columns=EDGE)
    with pytest.raises(DataContractError) as info:
        resolve_mask(schema, _cfg(path, strict=True))
    message = str(info.value)
    assert path in message
    assert "node_columns" in message
    assert "not_a_column" in message
    assert info.value.file == path
    assert info.value.key == "node_columns"


def test_strict_unknown_edge_column_raises(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=NODE, edge_columns=["distance", "hist_9"])
    with pytest.raises(DataContractError, match="edge_columns"):
        resolve_mask(schema, _cfg(path))


def test_non_strict_ignores_unknown_columns(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["rasa", "not_a_column"], edge_columns=["hist_0", "hist_9"])
    resolved = resolve_mask(schema, _cfg(path, strict=False))
    assert resolved.node_keep == [0]
    assert resolved.edge_keep == [1]


def test_missing_mask_file_raises(schema: FeatureSchema, tmp_path: Path) -> None:
    path = tmp_path / "nope" / "feature_mask.json"
    with pytest.raises(DataContractError) as info:
        resolve_mask(schema, _cfg(str(path)))
    assert str(path) in str(info.value)
    assert info.value.key == "feature_mask.path"


def test_non_object_mask_file_raises(schema: FeatureSchema, tmp_path: Path) -> None:
    path = tmp_path / "mask.json"
    path.write_text(json.dumps(["rasa", "phi"]))
    with pytest.raises(DataContractError, match="node_columns"):
        resolve_mask(schema, _cfg(str(path)))


def test_mask_removing_every_node_column_raises(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=[], edge_columns=EDGE)
    with pytest.raises(DataContractError, match="node_columns"):
        resolve_mask(schema, _cfg(path))
    # the same with only unknown names under strict=False
    path = _mask(tmp_path, node_columns=["not_a_column"], edge_columns=EDGE)
    with pytest.raises(DataContractError, match="node_columns"):
        resolve_mask(schema, _cfg(path, strict=False))


def test_empty_node_mask_allowed_when_nodes_not_governed(
    schema: FeatureSchema, tmp_path: Path
) -> None:
    path = _mask(tmp_path, node_columns=[], edge_columns=["hist_0"])
    resolved = resolve_mask(schema, _cfg(path, ["edge"]))
    assert resolved.node_keep is None
    assert resolved.edge_keep == [1]


def test_resolved_mask_sizes_the_net(schema: FeatureSchema, tmp_path: Path) -> None:
    path = _mask(tmp_path, node_columns=["rasa", "base.b", "primary.s0.a"], edge_columns=["hist_0"])
    resolved = resolve_mask(schema, _cfg(path))
    net = build_net(
        NetConfig(
            node_dim=schema.node_dim,
            edge_dim=schema.edge_dim,
            hidden_dim=8,
            num_layers=1,
            heads=1,
            node_keep=resolved.node_keep,
            edge_keep=resolved.edge_keep,
        )
    )
    assert net.node_encoder.in_features == 3
    assert net.edge_encoder[0].in_features == 1
