"""Feature masks: which node/edge columns a model sees (written by FLT, read by training).

A mask file is JSON with ``node_columns`` and ``edge_columns`` (the kept column names) plus
free-form provenance. ``apply_to`` limits which kinds the mask governs: ``node`` (basic residue
columns), ``topology`` (topology columns) and ``edge``; kinds not listed keep every column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphqa.config import FeatureMaskConfig
from graphqa.contract import DataContractError, read_json
from graphqa.schema import FeatureSchema


@dataclass(frozen=True)
class ResolvedMask:
    """A feature mask as column indices, which is what the network's input selection takes.

    Attributes:
        node_keep: indices of the node columns kept (``None``: all).
        edge_keep: indices of the edge columns kept (``None``: all).
    """

    node_keep: list[int] | None  # None = all columns
    edge_keep: list[int] | None

    @property
    def is_identity(self) -> bool:
        return self.node_keep is None and self.edge_keep is None


def _kept(
    columns: list[str], wanted: list[str], governed: set[str], path: Path, key: str, strict: bool
) -> list[int] | None:
    known = set(columns)
    unknown = [c for c in wanted if c not in known]
    if unknown and strict:
        raise DataContractError(
            path,
            key,
            "column names that exist in the resolved schema (feature_metadata.json)",
            f"unknown {unknown[:5]}",
        )
    wanted_set = set(wanted)
    keep = [i for i, c in enumerate(columns) if c not in governed or c in wanted_set]
    return None if len(keep) == len(columns) else keep


def resolve_mask(schema: FeatureSchema, cfg: FeatureMaskConfig) -> ResolvedMask:
    """Column indices to keep for ``cfg.path`` (identity when no mask is configured)."""
    if cfg.path is None:
        return ResolvedMask(None, None)
    path = Path(cfg.path)
    if not path.exists():
        raise DataContractError(
            path, "feature_mask.path", "an existing mask JSON file", "no such file"
        )
    mask = read_json(path)
    if not isinstance(mask, dict):
        raise DataContractError(path, "<file>", "a JSON object with node_columns/edge_columns")
    topo = set(schema.topology_columns)
    governed_node: set[str] = set()
    if "node" in cfg.apply_to:
        governed_node |= {c for c in schema.node_columns if c not in topo}
    if "topology" in cfg.apply_to:
        governed_node |= topo
    node_keep = _kept(
        schema.node_columns,
        list(mask.get("node_columns", schema.node_columns)),
        governed_node,
        path,
        "node_columns",
        cfg.strict,
    )
    governed_edge = set(schema.edge_columns) if "edge" in cfg.apply_to else set()
    edge_keep = _kept(
        schema.edge_columns,
        list(mask.get("edge_columns", schema.edge_columns)),
        governed_edge,
        path,
        "edge_columns",
        cfg.strict,
    )
    if node_keep == []:
        raise DataContractError(path, "node_columns", "at least one kept node column", "none")
    if edge_keep == []:
        raise DataContractError(
            path,
            "edge_columns",
            "at least one kept edge column (the model attends with edge features)",
            "none",
        )
    return ResolvedMask(node_keep, edge_keep)
