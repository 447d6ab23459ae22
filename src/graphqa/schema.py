"""Resolve the feature schema of a graph folder and validate graphs and labels against it.

The schema comes from ``graph_metadata.json`` when present (the builder's word) and otherwise
from inspecting the ``.pt`` files; either way it is written to ``feature_metadata.json`` so
training, FLT and inference size everything from it instead of hard-coded dimensions.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch_geometric.data import Data

from graphqa.contract import (
    BUILDER_SUMMARY,
    EDGE_COLUMNS,
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    LABEL_COLUMNS,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    DataContractError,
    GraphRecord,
    list_graph_files,
    load_graph,
    read_json,
    target_of,
)
from graphqa.data import TUNING_SPLIT, pack_graphs
from graphqa.files import atomic_dir, write_json
from graphqa.layout import SchemaPaths
from graphqa.manifest import coverage_problems, manifest_key, read_manifest, verify_entry


@dataclass(frozen=True)
class FeatureSchema:
    """Dimensions and column names of node and edge features, plus provenance."""

    node_columns: list[str]
    edge_columns: list[str]
    topology_columns: list[str] = field(default_factory=list)
    edge_module: str | None = None
    edge_aliases: list[str] = field(default_factory=list)
    topology_module: str | None = None
    module_registry: dict[str, Any] = field(default_factory=dict)
    builder: dict[str, Any] = field(default_factory=dict)
    source: str = GRAPH_METADATA
    #: Machine-independent facts from ``graph_builder_summary.json`` (None: no summary found).
    builder_summary: dict[str, Any] | None = None

    @property
    def node_dim(self) -> int:
        return len(self.node_columns)

    @property
    def edge_dim(self) -> int:
        return len(self.edge_columns)

    @property
    def topology_dim(self) -> int:
        return len(self.topology_columns)

    @property
    def basic_columns(self) -> list[str]:
        """Node columns that are not topology columns (residue-level descriptors)."""
        topo = set(self.topology_columns)
        return [c for c in self.node_columns if c not in topo]

    def to_json(self) -> dict[str, Any]:
        return {
            "node": {"dim": self.node_dim, "columns": self.node_columns},
            "edge": {
                "dim": self.edge_dim,
                "columns": self.edge_columns,
                "module": self.edge_module,
                "aliases": self.edge_aliases,
            },
            "topology": {
                "dim": self.topology_dim,
                "columns": self.topology_columns,
                "module": self.topology_module,
            },
            "module_registry": self.module_registry,
            "builder": self.builder,
            "builder_summary": self.builder_summary,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureSchema:
        return cls(
            node_columns=list(obj["node"]["columns"]),
            edge_columns=list(obj["edge"]["columns"]),
            topology_columns=list(obj["topology"]["columns"]),
            edge_module=obj["edge"].get("module"),
            edge_aliases=list(obj["edge"].get("aliases") or []),
            topology_module=obj["topology"].get("module"),
            module_registry=dict(obj.get("module_registry") or {}),
            builder=dict(obj.get("builder") or {}),
            source=obj.get("source", GRAPH_METADATA),
            builder_summary=obj.get("builder_summary"),
        )

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        """Read a schema written by :meth:`to_json` (``feature_metadata.json``).

        Args:
            path: the file.

        Returns:
            The schema.

        Raises:
            DataContractError: the file is not JSON or not an object; ``node``, ``edge`` or
                ``topology`` is not an object whose ``columns`` is a list of names (and whose
                ``dim``, when given, is their number); a module is neither null nor a name;
                ``edge.aliases`` is not a list of names; ``module_registry``, ``builder`` or
                ``builder_summary`` is not an object; ``source`` is not a string.
        """
        obj = read_json(path)
        if not isinstance(obj, dict):
            raise DataContractError(path, "<file>", "a JSON object (a feature schema)")

        def names(value: Any) -> bool:
            return isinstance(value, list) and all(isinstance(c, str) for c in value)

        for kind in ("node", "edge", "topology"):
            block = obj.get(kind)
            if not isinstance(block, dict):
                got = "missing" if kind not in obj else repr(block)[:80]
                raise DataContractError(path, kind, "an object {dim, columns}", got)
            columns = block.get("columns")
            if not names(columns):
                got = "missing" if "columns" not in block else repr(columns)[:80]
                raise DataContractError(path, f"{kind}.columns", "a list of column names", got)
            dim = block.get("dim", len(columns))
            if isinstance(dim, bool) or dim != len(columns):
                raise DataContractError(
                    path, f"{kind}.dim", f"{len(columns)} (the number of {kind}.columns)", repr(dim)
                )
            module = block.get("module")
            if module is not None and not isinstance(module, str):
                raise DataContractError(
                    path, f"{kind}.module", "null or a module name", repr(module)[:80]
                )
        aliases = obj["edge"].get("aliases")
        if aliases is not None and not names(aliases):
            raise DataContractError(path, "edge.aliases", "a list of names", repr(aliases)[:80])
        for key in ("module_registry", "builder", "builder_summary"):
            if obj.get(key) is not None and not isinstance(obj[key], dict):
                raise DataContractError(path, key, "null or an object", repr(obj[key])[:80])
        if not isinstance(obj.get("source", GRAPH_METADATA), str):
            raise DataContractError(path, "source", "a string", repr(obj["source"])[:80])
        return cls.from_json(obj)

    def diff(self, other: FeatureSchema) -> list[str]:
        """Human-readable differences that would make a model trained on one unusable on
        the other (dims and column names)."""
        problems = []
        for kind in ("node", "edge"):
            mine, theirs = getattr(self, f"{kind}_columns"), getattr(other, f"{kind}_columns")
            if len(mine) != len(theirs):
                problems.append(f"{kind} dim {len(mine)} != {len(theirs)}")
            elif mine != theirs:
                bad = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b)
                problems.append(f"{kind} column {bad}: '{mine[bad]}' != '{theirs[bad]}'")
        return problems


def _column_list(path: Path, expected_dim: int | None, key: str) -> list[str] | None:
    if not path.exists():
        return None
    cols = read_json(path)
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise DataContractError(path, "<file>", "a JSON list of column names")
    if expected_dim is not None and len(cols) != expected_dim:
        raise DataContractError(
            path, "<file>", f"{expected_dim} column names ({key})", str(len(cols))
        )
    return cols


def _schema_from_metadata(graph_dir: Path, path: Path) -> FeatureSchema:
    """Schema from the metadata sidecar at ``path``; column sidecars are read from the folder."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataContractError(path, "<file>", "a JSON object")
    try:
        node_schema, edge_schema = meta["_node_schema"], meta["_edge_schema"]
    except KeyError as exc:
        raise DataContractError(path, str(exc.args[0]), "a schema block {columns, dim}") from None
    topo_schema = meta.get("_topology_schema") or {"columns": [], "dim": 0}
    for key, block in (
        ("_node_schema", node_schema),
        ("_edge_schema", edge_schema),
        ("_topology_schema", topo_schema),
    ):
        if len(block.get("columns", [])) != block.get("dim"):
            raise DataContractError(
                path,
                f"{key}.columns",
                f"{block.get('dim')} names (= {key}.dim)",
                str(len(block.get("columns", []))),
            )
    for key, block in (
        ("node_feature_dim", node_schema),
        ("edge_feature_dim", edge_schema),
        ("topology_feature_dim", topo_schema),
    ):
        if key in meta and meta[key] != block["dim"]:
            raise DataContractError(path, key, f"{block['dim']} (schema block dim)", str(meta[key]))

    node_cols = list(node_schema["columns"])
    topo_cols = list(topo_schema["columns"])
    if node_cols[len(node_cols) - len(topo_cols) :] != topo_cols:
        raise DataContractError(
            path, "_topology_schema.columns", "the tail of _node_schema.columns"
        )
    # Column sidecars, when present, must agree with the metadata block.
    for fname, cols, key in (
        (NODE_COLUMNS, node_cols, "_node_schema"),
        (EDGE_COLUMNS, list(edge_schema["columns"]), "_edge_schema"),
    ):
        side = _column_list(graph_dir / fname, len(cols), key)
        if side is not None and side != cols:
            raise DataContractError(graph_dir / fname, "<file>", f"the same names as {key}")
    topo_side = _column_list(graph_dir / TOPOLOGY_COLUMNS, len(topo_cols) + 1, "ID + topology")
    if topo_side is not None and topo_side[1:] != topo_cols:
        raise DataContractError(
            graph_dir / TOPOLOGY_COLUMNS, "<file>", '["ID", *_topology_schema.columns]'
        )

    registry = meta.get("_module_registry") or {}
    if not isinstance(registry, dict):
        raise DataContractError(path, "_module_registry", "an object of kind -> module")
    edge_entry = registry.get("edge")  # builders write {"id", "aliases"} or just the module id
    edge_module = edge_schema.get("module") or meta.get("edge_module")
    return FeatureSchema(
        node_columns=node_cols,
        edge_columns=list(edge_schema["columns"]),
        topology_columns=topo_cols,
        edge_module=edge_module,
        edge_aliases=list(edge_entry.get("aliases") or []) if isinstance(edge_entry, dict) else [],
        topology_module=topo_schema.get("module"),
        module_registry=registry,
        builder=meta.get("_builder") or {},
        source=GRAPH_METADATA,
    )


def _schema_from_graphs(graph_dir: Path, graph_files: dict[str, Path]) -> FeatureSchema:
    """Fallback when there is no ``graph_metadata.json``: read dims from the first graph."""
    if not graph_files:
        raise DataContractError(graph_dir, "paths.graph_dir", "at least one .pt graph", "none")
    first_path = next(iter(graph_files.values()))
    first = load_graph(first_path)
    node_dim, edge_dim = _dims_of(first, first_path)
    node_cols = _column_list(graph_dir / NODE_COLUMNS, node_dim, "node dim") or [
        f"node_{i:03d}" for i in range(node_dim)
    ]
    edge_cols = _column_list(graph_dir / EDGE_COLUMNS, edge_dim, "edge dim") or [
        f"edge_{i:03d}" for i in range(edge_dim)
    ]
    topo_side = _column_list(graph_dir / TOPOLOGY_COLUMNS, None, "topology")
    topo_cols = [c for c in (topo_side or [])[1:] if c in set(node_cols)]
    meta = getattr(first, "metadata", None) or {}
    return FeatureSchema(
        node_columns=node_cols,
        edge_columns=edge_cols,
        topology_columns=topo_cols,
        edge_module=meta.get("edge_module"),
        source="pt_inspection",
    )


def _dims_of(data: Data, path: Path) -> tuple[int, int]:
    for key in ("x", "edge_index", "edge_attr"):
        if not isinstance(getattr(data, key, None), torch.Tensor):
            raise DataContractError(path, key, "a tensor", "missing")
    if data.x.dim() != 2 or data.edge_attr.dim() != 2:
        raise DataContractError(
            path,
            "x/edge_attr",
            "2-D tensors",
            f"{tuple(data.x.shape)} / {tuple(data.edge_attr.shape)}",
        )
    return int(data.x.shape[1]), int(data.edge_attr.shape[1])


def resolve_schema(
    graph_dir: str | Path,
    graph_files: dict[str, Path] | None = None,
    metadata_path: str | Path | None = None,
) -> FeatureSchema:
    """Schema of a graph folder: the metadata sidecar if present, else the graphs.

    ``metadata_path`` (``paths.metadata_path``) as :func:`find_graph_metadata` resolves it.
    """
    graph_dir = Path(graph_dir)
    path = find_graph_metadata(graph_dir, metadata_path)
    if path is not None:
        return _schema_from_metadata(graph_dir, path)
    return _schema_from_graphs(graph_dir, graph_files or list_graph_files(graph_dir))


def find_graph_metadata(
    graph_dir: str | Path, metadata_path: str | Path | None = None
) -> Path | None:
    """The ``graph_metadata.json`` the schema comes from, or None (read it off the graphs).

    Null (the default) follows the graph folder: ``<graph_dir>/graph_metadata.json`` when
    present, a file inside ``paths.graph_dir`` (which the ``schema`` stage declares). Set, it
    wins: a file must exist; a folder is looked in (no sidecar there means inspection).
    """
    if metadata_path is None:
        path = Path(graph_dir) / GRAPH_METADATA
        return path if path.exists() else None
    path = Path(metadata_path)
    if path.is_dir():
        path = path / GRAPH_METADATA
        return path if path.is_file() else None
    if not path.is_file():
        raise DataContractError(
            path,
            "paths.metadata_path",
            f"an existing {GRAPH_METADATA}, a folder to look in, or null "
            f"(<graph_dir>/{GRAPH_METADATA})",
            "no such file",
        )
    return path


# --------------------------------------------------------------------------------------------
# The builder's run summary: only facts that are the same on every machine go downstream, since
# feature_metadata.json must be byte-reproducible (no paths, commands or timings).

_SUMMARY_BUILDER_KEYS = ("id", "name", "version")
_SUMMARY_MODULE_SECTIONS = ("node", "edge", "topology", "interface")
_SUMMARY_MODULE_KEYS = ("module", "processed", "success", "failures", "skipped")
_SUMMARY_VALIDATION_KEYS = ("enabled", "exit_code")
_SUMMARY_DIMS = {
    "node_feature_dim": "node_dim",
    "edge_feature_dim": "edge_dim",
    "topology_feature_dim": "topology_dim",
}


def summary_beside(graph_dir: str | Path) -> Path:
    """``<graph_dir>/../graph_builder_summary.json``: where a graph builder writes its run
    summary (next to ``graph_data/``). dvc.yaml's ``schema`` stage declares this very path,
    normalised the way DVC does (lexically, like ``os.path.abspath``)."""
    return Path(os.path.normpath(os.path.join(graph_dir, os.pardir, BUILDER_SUMMARY)))


def find_builder_summary(
    graph_dir: str | Path, summary_path: str | Path | None = None
) -> Path | None:
    """The ``graph_builder_summary.json`` to use (``paths.summary_path``), or None.

    A file is used as is; a folder is searched (absent is fine); null (the default) follows the
    graph folder: the summary inside it, else :func:`summary_beside` it, where the builder
    writes it (both are declared inputs of the ``schema`` stage).
    """
    if summary_path is None:
        candidates = [Path(graph_dir) / BUILDER_SUMMARY, summary_beside(graph_dir)]
        return next((p for p in candidates if p.is_file()), None)
    path = Path(summary_path)
    if path.is_dir():
        return path / BUILDER_SUMMARY if (path / BUILDER_SUMMARY).is_file() else None
    if path.is_file():
        return path
    raise DataContractError(
        path,
        "paths.summary_path",
        f"an existing {BUILDER_SUMMARY}, a folder to search for one, or null (auto-discover)",
        "no such file or folder",
    )


def _summary_section(path: Path, summary: dict[str, Any], key: str) -> dict[str, Any]:
    section = summary.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise DataContractError(path, key, "a JSON object", type(section).__name__)
    return section


def _scalar(value: Any) -> bool:
    """Strings, ints and bools: ids, versions and counts (floats there are timings)."""
    return isinstance(value, (str, int))


def builder_summary_facts(path: str | Path, schema: FeatureSchema) -> dict[str, Any]:
    """Machine-independent facts of a builder summary, after checking its ``feature_dims``
    against the resolved schema (a model sized from one must fit graphs described by the
    other)."""
    path = Path(path)
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise DataContractError(path, "<file>", "a JSON object (the graph builder's run summary)")
    dims = _summary_section(path, summary, "feature_dims")
    for key, attr in _SUMMARY_DIMS.items():
        if key not in dims:
            continue
        value, expected = dims[key], getattr(schema, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value != expected:
            raise DataContractError(
                path,
                f"feature_dims.{key}",
                f"{expected} (the resolved schema, from {schema.source})",
                repr(value),
            )
    facts: dict[str, Any] = {"file": path.name}
    builder = _summary_section(path, summary, "builder")
    facts["builder"] = {k: builder[k] for k in _SUMMARY_BUILDER_KEYS if _scalar(builder.get(k))}
    facts["feature_dims"] = {k: dims[k] for k in _SUMMARY_DIMS if k in dims}
    for section in _SUMMARY_MODULE_SECTIONS:
        stats = _summary_section(path, summary, section)
        kept = {k: stats[k] for k in _SUMMARY_MODULE_KEYS if _scalar(stats.get(k))}
        if kept:
            facts[section] = kept
    validation = _summary_section(path, summary, "validation")
    kept = {k: validation[k] for k in _SUMMARY_VALIDATION_KEYS if _scalar(validation.get(k))}
    if kept:
        facts["validation"] = kept
    return facts


def with_builder_summary(
    schema: FeatureSchema, graph_dir: str | Path, summary_path: str | Path | None = None
) -> FeatureSchema:
    """The schema carrying the builder summary's facts, when a summary is found."""
    found = find_builder_summary(graph_dir, summary_path)
    if found is None:
        return schema
    return replace(schema, builder_summary=builder_summary_facts(found, schema))


def schema_checker(
    graph_dir: str | Path, metadata_path: str | Path | None = None
) -> Callable[[Data, Path], None]:
    """A picklable per-graph check against the folder's schema (for ``graphqa validate``'s
    worker processes), so a folder that verifies is also one the pipeline accepts."""
    return partial(validate_graph, schema=resolve_schema(graph_dir, metadata_path=metadata_path))


def validate_graph(data: Data, path: Path, schema: FeatureSchema) -> None:
    """Raise :class:`DataContractError` unless the graph matches the schema exactly."""
    node_dim, edge_dim = _dims_of(data, path)
    if data.x.dtype != torch.float32 or data.edge_attr.dtype != torch.float32:
        raise DataContractError(
            path, "x/edge_attr", "float32", f"{data.x.dtype}/{data.edge_attr.dtype}"
        )
    if node_dim != schema.node_dim:
        raise DataContractError(path, "x", f"{schema.node_dim} node feature columns", str(node_dim))
    if edge_dim != schema.edge_dim:
        raise DataContractError(
            path, "edge_attr", f"{schema.edge_dim} edge feature columns", str(edge_dim)
        )
    n, ei = data.x.shape[0], data.edge_index
    if n == 0:
        raise DataContractError(path, "x", "at least one node", "0 nodes")
    if ei.dtype != torch.int64 or ei.dim() != 2 or ei.shape[0] != 2:
        raise DataContractError(path, "edge_index", "int64 [2, E]", f"{ei.dtype} {tuple(ei.shape)}")
    if ei.shape[1] != data.edge_attr.shape[0]:
        raise DataContractError(
            path, "edge_attr", f"{ei.shape[1]} rows (one per edge)", str(data.edge_attr.shape[0])
        )
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DataContractError(
            path,
            "edge_index",
            f"node indices in [0, {n - 1}]",
            f"[{int(ei.min())}, {int(ei.max())}]",
        )
    for key in ("x", "edge_attr"):
        tensor = getattr(data, key)
        if not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
            raise DataContractError(path, key, "finite values", f"non-finite at {bad}")


def read_labels(path: str | Path, split: str) -> pd.DataFrame:
    """Label CSV as a frame with MODEL (str), dockq (float), capri (str, may be empty)."""
    path = Path(path)
    if not path.exists():
        raise DataContractError(
            path, f"paths.{split}_labels", "an existing label CSV", "no such file"
        )
    try:
        frame = pd.read_csv(path, dtype={"MODEL": str, "capri": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataContractError(
            path, "<file>", "a CSV with header MODEL,dockq,capri", str(exc)
        ) from None
    missing = [c for c in LABEL_COLUMNS[:2] if c not in frame.columns]
    if missing:
        raise DataContractError(
            path, ",".join(missing), "columns MODEL,dockq,capri", ",".join(map(str, frame.columns))
        )
    if "capri" not in frame.columns:
        frame["capri"] = ""
    dockq = pd.to_numeric(frame["dockq"].replace("", float("nan")), errors="coerce")
    for i, (model, value) in enumerate(zip(frame["MODEL"], dockq, strict=True)):
        if not (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0.0 <= value <= 1.0
        ):
            raise DataContractError(
                path,
                f"dockq (row {i + 2}, MODEL {model})",
                "a number in [0, 1]",
                repr(frame["dockq"].iloc[i]),
            )
    frame["dockq"] = dockq.astype(float)
    dupes = frame["MODEL"][frame["MODEL"].duplicated()].unique().tolist()
    if dupes:
        raise DataContractError(path, "MODEL", "unique model names", f"duplicates {dupes[:5]}")
    return frame[list(LABEL_COLUMNS)]


def match_labels(
    frame: pd.DataFrame, graph_files: dict[str, Path], label_path: str | Path, split: str
) -> tuple[list[GraphRecord], list[str]]:
    """Pair each label row with its graph: ``<graph_dir>/<MODEL>.pt`` or the unique file whose
    stem is MODEL. Returns the records and the MODELs that have no graph."""
    by_stem: dict[str, list[str]] = {}
    for key in graph_files:
        by_stem.setdefault(Path(key).name, []).append(key)
    records, missing = [], []
    for row in frame.itertuples(index=False):
        model = str(row.MODEL).removesuffix(".pt")
        if model in graph_files:
            key = model
        elif len(by_stem.get(Path(model).name, [])) == 1:
            key = by_stem[Path(model).name][0]
        elif len(by_stem.get(Path(model).name, [])) > 1:
            raise DataContractError(
                label_path,
                f"MODEL {model}",
                "one graph with that stem",
                f"{len(by_stem[Path(model).name])} graphs",
            )
        else:
            missing.append(model)
            continue
        records.append(
            GraphRecord(
                key=key,
                model=Path(model).name,
                target=target_of(model),
                dockq=float(row.dockq),
                capri=str(row.capri),
            )
        )
    return records, missing


def _check_disjoint_targets(
    split_records: dict[str, list[GraphRecord]], label_files: dict[str, str]
) -> None:
    seen: dict[str, str] = {}
    for split, records in split_records.items():
        for target in sorted({r.target for r in records}):
            if target in seen and seen[target] != split:
                raise DataContractError(
                    label_files[split],
                    f"target {target}",
                    f"targets in one split only (already in {seen[target]}: "
                    f"{label_files[seen[target]]})",
                    f"also in {split}",
                )
            seen[target] = split


def _manifest_coverage(
    manifest: dict[str, dict[str, str]] | None,
    graph_files: dict[str, Path],
    manifest_path: Path,
    allow_missing_graphs: bool,
    ignore_metadata: bool,
) -> dict[str, Any]:
    """Check the manifest lists exactly the graphs on disk; the coverage report's summary.

    A graph on disk without an entry is always an error (it could never be verified). An entry
    whose graph is gone is tolerated only under ``allow_missing_graphs`` and listed here.
    """
    if manifest is None:
        return {"verified": False}
    listed_missing = []
    for problem in coverage_problems(manifest, graph_files, manifest_path, manifest_path.parent):
        if problem.key in manifest and allow_missing_graphs:
            listed_missing.append(problem.key)
        else:
            raise problem
    return {
        "verified": True,
        "ignore_metadata": ignore_metadata,
        "entries": len(manifest),
        "listed_missing_on_disk": listed_missing,
    }


def schema_stage(
    *,
    graph_dir: str | Path,
    label_files: dict[str, str],
    out_dir: str | Path,
    verify_manifest: bool = True,
    allow_missing_graphs: bool = False,
    manifest_ignore_metadata: bool = False,
    metadata_path: str | Path | None = None,
    summary_path: str | Path | None = None,
) -> dict[str, Any]:
    """Stage worker for ``schema``: resolve the schema, validate every labelled graph and pack
    each split, so training never reads a graph that does not fit the schema.

    With ``verify_manifest`` the manifest must exist, list exactly the graphs on disk (graphs
    listed but missing are tolerated only with ``allow_missing_graphs``) and match every graph
    that is packed; ``manifest_ignore_metadata`` skips the ``metadata`` digests on purpose.

    Reads the label CSVs in ``label_files``, the labelled graphs among the ``.pt`` files below
    ``graph_dir``, the ``graph_metadata.json`` :func:`find_graph_metadata` finds (none:
    the first graph's dims), ``<graph_dir>/{node,edge,topology}_columns.json`` when present,
    the ``graph_builder_summary.json`` :func:`find_builder_summary` finds and, with
    ``verify_manifest``, ``<graph_dir>/graph_manifest.json``. Writes into ``out_dir``, only if
    everything validates (atomic swap): ``feature_metadata.json``, ``dataset_coverage.json``
    and ``packed/<split>.pt`` per split (``tuning`` only when its CSV has rows).

    Args:
        graph_dir: the folder of ``.pt`` graphs (``paths.graph_dir``).
        label_files: split name -> label CSV (:meth:`graphqa.config.PathsConfig.label_files`).
        out_dir: the stage's output folder.
        verify_manifest: check every packed graph against the builder's manifest.
        allow_missing_graphs: drop label rows without a graph (reported) instead of failing.
        manifest_ignore_metadata: skip the manifest's ``metadata`` digests.
        metadata_path: ``paths.metadata_path`` (``None``: follow ``graph_dir``).
        summary_path: ``paths.summary_path`` (``None``: follow ``graph_dir``).

    Returns:
        The coverage report written to ``dataset_coverage.json``.

    Raises:
        DataContractError: a graph, label file, sidecar or the manifest breaks the contract.
    """

    graph_dir = Path(graph_dir)
    graph_files = list_graph_files(graph_dir)
    schema = resolve_schema(graph_dir, graph_files, metadata_path)
    schema = with_builder_summary(schema, graph_dir, summary_path)
    manifest_path = graph_dir / GRAPH_MANIFEST
    manifest: dict[str, dict[str, str]] = {}
    if verify_manifest:
        if not manifest_path.is_file():
            raise DataContractError(
                manifest_path,
                "schema.verify_manifest",
                f"the builder's {GRAPH_MANIFEST} next to the graphs (write one with `graphqa "
                "validate GRAPH_DIR --write-manifest`, or set schema.verify_manifest: false "
                "to skip the check)",
                "no such file",
            )
        manifest = read_manifest(manifest_path)

    split_records: dict[str, list[GraphRecord]] = {}
    coverage: dict[str, Any] = {}
    for split, label_path in label_files.items():
        frame = read_labels(label_path, split)
        if split == TUNING_SPLIT and frame.empty:
            continue  # header-only tuning CSV = no tuning split: nothing packed or reported
        records, missing = match_labels(frame, graph_files, label_path, split)
        if missing and not allow_missing_graphs:
            raise DataContractError(
                label_path,
                f"MODEL {missing[0]}",
                f"a graph at {graph_dir}/<TARGET>/{missing[0]}.pt (or a .pt with that stem)",
                f"no graph ({len(missing)} labels without graphs; set "
                "schema.allow_missing_graphs: true to drop them)",
            )
        split_records[split] = records
        coverage[split] = {
            "total": len(frame),
            "usable": len(records),
            "coverage": round(len(records) / max(len(frame), 1), 6),
            "missing_graphs": missing,
        }
    _check_disjoint_targets(split_records, label_files)
    labelled = {r.key for records in split_records.values() for r in records}
    unlabelled = [k for k in graph_files if k not in labelled]
    coverage["graphs_without_labels"] = {"count": len(unlabelled), "models": unlabelled}
    coverage["graph_files"] = len(graph_files)
    coverage["manifest"] = _manifest_coverage(
        manifest if verify_manifest else None,
        graph_files,
        manifest_path,
        allow_missing_graphs,
        manifest_ignore_metadata,
    )

    with atomic_dir(out_dir) as tmp:
        out = SchemaPaths(tmp)
        out.packed_dir.mkdir()
        for split, records in split_records.items():
            graphs = []
            for record in records:
                path = graph_files[record.key]
                data = load_graph(path)
                validate_graph(data, path, schema)
                if verify_manifest:
                    entry = manifest[manifest_key(record.key)]
                    verify_entry(data, entry, path, manifest_ignore_metadata)
                graphs.append(data)
            pack_graphs(records, graphs).save(out.packed(split))
        write_json(out.feature_metadata, schema.to_json())
        write_json(out.coverage, coverage)
    return coverage
