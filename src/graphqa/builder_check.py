"""``graphqa check-graphs``: is a graph builder's output complete enough to train on?

The seeds' FLT walkthrough starts by confirming every sidecar is present and consistent
(step 1): feature groups are formed from the column names, so a folder with missing or
mismatched column files gives meaningless groups instead of an error. Each sidecar is reported
as ``[OK]``, ``[MISSING]`` or ``[INVALID] name: why``; digests are ``graphqa validate``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from graphqa.contract import (
    BUILDER_SUMMARY,
    EDGE_COLUMNS,
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    DataContractError,
    list_graph_files,
    read_json,
)
from graphqa.manifest import coverage_problems, read_manifest

#: Sub-folders a builder output dir keeps its graphs in (the builder's, the embedded dataset's).
GRAPH_SUBDIRS = ("graph_data", "graphs")
Status = Literal["OK", "MISSING", "INVALID"]


class _Invalid(Exception):
    """A sidecar that exists but is wrong; the message says why."""


@dataclass(frozen=True)
class SidecarCheck:
    """One sidecar's verdict, so ``check-graphs`` can print it and decide its exit code.

    Attributes:
        name: the sidecar's file name.
        status: ``OK``, ``MISSING`` or ``INVALID``.
        why: what is wrong (``INVALID`` only).
        required: whether a missing file fails the check (an invalid one always does).
    """

    name: str
    status: Status
    why: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return (self.required and self.status != "OK") or self.status == "INVALID"

    def line(self) -> str:
        if self.status == "INVALID":
            return f"[INVALID] {self.name}: {self.why}"
        suffix = "" if self.required or self.status == "OK" else " (optional)"
        return f"[{self.status}] {self.name}{suffix}"


@dataclass(frozen=True)
class _Dims:
    """Column lists declared by graph_metadata.json (None where it does not say)."""

    node: list[str] | None = None
    edge: list[str] | None = None
    topology: list[str] | None = None


def locate(build_dir: str | Path) -> tuple[Path, Path | None]:
    """(graph folder, builder summary or None) for a builder output dir or a graph folder."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise DataContractError(build_dir, "BUILD_DIR", "an existing folder", "no such folder")
    is_graph_dir = any((build_dir / n).exists() for n in (GRAPH_METADATA, GRAPH_MANIFEST))
    subdirs = [build_dir / d for d in GRAPH_SUBDIRS if (build_dir / d).is_dir()]
    graph_dir = subdirs[0] if subdirs and not is_graph_dir else build_dir
    candidates = (graph_dir / BUILDER_SUMMARY, graph_dir.parent / BUILDER_SUMMARY)
    return graph_dir, next((p for p in candidates if p.is_file()), None)


def _string_list(path: Path) -> list[str]:
    cols = _json(path)
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise _Invalid("expected a JSON list of column names")
    return cols


def _json(path: Path) -> Any:
    try:
        return read_json(path)
    except DataContractError as exc:
        raise _Invalid(exc.got or exc.expected) from None


def _column_block(meta: dict[str, Any], key: str) -> list[str]:
    block = meta.get(key)
    if not isinstance(block, dict):
        raise _Invalid(f"'{key}': expected an object {{columns, dim}}")
    cols, dim = block.get("columns"), block.get("dim")
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise _Invalid(f"'{key}.columns': expected a list of column names")
    if dim != len(cols):
        raise _Invalid(f"'{key}.dim' is {dim!r} but '{key}.columns' has {len(cols)} names")
    return cols


def _metadata_dims(path: Path) -> _Dims:
    meta = _json(path)
    if not isinstance(meta, dict):
        raise _Invalid("expected a JSON object")
    node, edge = _column_block(meta, "_node_schema"), _column_block(meta, "_edge_schema")
    topo = _column_block(meta, "_topology_schema") if "_topology_schema" in meta else []
    for key, cols in (
        ("node_feature_dim", node),
        ("edge_feature_dim", edge),
        ("topology_feature_dim", topo),
    ):
        if key in meta and meta[key] != len(cols):
            raise _Invalid(f"'{key}' is {meta[key]!r} but the schema block has {len(cols)} columns")
    if topo and node[len(node) - len(topo) :] != topo:
        raise _Invalid("'_topology_schema.columns' is not the tail of '_node_schema.columns'")
    return _Dims(node=node, edge=edge, topology=topo)


def _check_columns(path: Path, declared: list[str] | None, block: str) -> list[str]:
    cols = _string_list(path)
    if declared is not None and len(cols) != len(declared):
        raise _Invalid(
            f"{len(cols)} columns, but {GRAPH_METADATA} '{block}.dim' is {len(declared)}"
        )
    if declared is not None and cols != declared:
        first = next(i for i, (a, b) in enumerate(zip(cols, declared, strict=True)) if a != b)
        raise _Invalid(
            f"column {first} is '{cols[first]}' but {GRAPH_METADATA} '{block}' has "
            f"'{declared[first]}'"
        )
    return cols


def _check_topology(path: Path, node_cols: list[str] | None, dims: _Dims) -> None:
    cols = _string_list(path)
    if not cols or cols[0] != "ID":
        raise _Invalid('expected ["ID", *topology columns]')
    tail = cols[1:]
    if dims.topology is not None and len(tail) != len(dims.topology):
        raise _Invalid(
            f"{len(tail)} topology columns after ID, but {GRAPH_METADATA} "
            f"'_topology_schema.dim' is {len(dims.topology)}"
        )
    if node_cols is not None and tail and node_cols[len(node_cols) - len(tail) :] != tail:
        raise _Invalid(f"columns after ID are not the tail of {NODE_COLUMNS}")


def _check_manifest(path: Path, graph_dir: Path) -> None:
    try:
        manifest = read_manifest(path)
        problems = coverage_problems(manifest, list_graph_files(graph_dir), path, graph_dir)
    except DataContractError as exc:
        got = f", got {exc.got}" if exc.got else ""
        raise _Invalid(f"'{exc.key}': expected {exc.expected}{got}") from None
    if problems:
        unlisted = [p.key for p in problems if p.key not in manifest]
        absent = [p.key for p in problems if p.key in manifest]
        parts = []
        if unlisted:
            parts.append(f"{len(unlisted)} .pt not listed (first: {unlisted[0]})")
        if absent:
            parts.append(f"{len(absent)} listed .pt missing on disk (first: {absent[0]})")
        raise _Invalid("; ".join(parts))


def _check_summary(path: Path, dims: _Dims) -> None:
    summary = _json(path)
    if not isinstance(summary, dict):
        raise _Invalid("expected a JSON object")
    feature_dims = summary.get("feature_dims", {})
    if not isinstance(feature_dims, dict):
        raise _Invalid("'feature_dims': expected an object")
    for key, cols in (
        ("node_feature_dim", dims.node),
        ("edge_feature_dim", dims.edge),
        ("topology_feature_dim", dims.topology),
    ):
        if key in feature_dims and cols is not None and feature_dims[key] != len(cols):
            raise _Invalid(
                f"'feature_dims.{key}' is {feature_dims[key]!r}, {GRAPH_METADATA} says {len(cols)}"
            )


def _run(name: str, path: Path, check: Any, *args: Any, required: bool = True) -> SidecarCheck:
    if not path.is_file():
        return SidecarCheck(name, "MISSING", required=required)
    try:
        check(path, *args)
    except _Invalid as exc:
        return SidecarCheck(name, "INVALID", str(exc), required=required)
    return SidecarCheck(name, "OK", required=required)


def check_build(build_dir: str | Path) -> tuple[Path, list[SidecarCheck]]:
    """The graph folder found and one check per sidecar, in the walkthrough's order."""
    graph_dir, summary = locate(build_dir)
    dims = _Dims()
    meta_path = graph_dir / GRAPH_METADATA
    meta_check = _run(GRAPH_METADATA, meta_path, _metadata_dims)
    if meta_check.status == "OK":
        dims = _metadata_dims(meta_path)
    node_cols = dims.node
    if node_cols is None and (graph_dir / NODE_COLUMNS).is_file():
        try:
            node_cols = _string_list(graph_dir / NODE_COLUMNS)
        except _Invalid:
            node_cols = None
    checks = [
        _run(TOPOLOGY_COLUMNS, graph_dir / TOPOLOGY_COLUMNS, _check_topology, node_cols, dims),
        _run(NODE_COLUMNS, graph_dir / NODE_COLUMNS, _check_columns, dims.node, "_node_schema"),
        _run(EDGE_COLUMNS, graph_dir / EDGE_COLUMNS, _check_columns, dims.edge, "_edge_schema"),
        _run(GRAPH_MANIFEST, graph_dir / GRAPH_MANIFEST, _check_manifest, graph_dir),
        meta_check,
    ]
    summary_path = summary or graph_dir.parent / BUILDER_SUMMARY
    checks.append(_run(BUILDER_SUMMARY, summary_path, _check_summary, dims, required=False))
    return graph_dir, checks
