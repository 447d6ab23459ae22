"""The graph builder's ``graph_manifest.json``: order-agnostic digests of every graph.

The builder hashes a *canonical* form of each graph so that the same graph written with its
nodes or edges in another order verifies, while any change to a value does not. graphqa must
reproduce that scheme bit for bit, or no real builder folder would ever verify:

1. Nodes: rows of ``x`` sorted lexicographically (column 0 most significant), ties by original
   row index; ``x`` (and ``batch`` when it has one entry per node) permuted accordingly.
2. Edges: ``edge_index`` renumbered through that permutation, then edges sorted by
   (source, target, ``edge_attr`` columns left to right), ties by original edge index; the order
   is applied to ``edge_index`` and to ``edge_attr`` (when it has one row per edge). Without
   nodes the edges are sorted the same way, without renumbering.
3. A tensor's digest: sha256 over ``str(dtype)``, ``repr(tuple(shape))`` and its C-order bytes.
4. ``metadata``'s digest: sha256 over ``json.dumps(metadata, sort_keys=True)``.

An entry maps ``"<TARGET>/<MODEL>.pt"`` to one digest per field the graph has among
:data:`MANIFEST_FIELDS`; a builder told to ignore metadata writes entries without ``metadata``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch_geometric.data import Data

from graphqa.contract import (
    GRAPH_MANIFEST,
    DataContractError,
    list_graph_files,
    load_graph,
    read_json,
)
from graphqa.files import dump_json, write_text_atomic

TENSOR_FIELDS = ("x", "edge_index", "edge_attr", "edge_weight", "batch")
METADATA_FIELD = "metadata"
MANIFEST_FIELDS = (*TENSOR_FIELDS, METADATA_FIELD)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

#: A per-graph check run before hashing (e.g. the feature schema); raises DataContractError.
GraphCheck = Callable[[Data, Path], None]


# --------------------------------------------------------------------------------------------
# The canonical form and its digests


def _sort_keys(tensor: torch.Tensor, rows: int) -> list[np.ndarray]:
    """Columns of ``tensor`` (one row per item) as numpy sort keys, most significant first.

    Floats are widened to float64 (exact for every torch float type), so comparisons are the
    numeric ones the builder's lexicographic sort makes: -0.0 ties with 0.0 (later columns, then
    the original index decide) and NaN sorts last (the schema check refuses NaN graphs anyway).
    """
    values = tensor.detach().cpu()
    if values.is_complex():
        raise TypeError(f"cannot order complex values ({values.dtype})")
    if values.is_floating_point():
        values = values.to(torch.float64)
    elif values.dtype == torch.bool:
        values = values.to(torch.uint8)
    width = int(np.prod(values.shape[1:], dtype=np.int64))  # 1 for a 1-D tensor
    table = values.numpy().reshape(rows, width)
    return [table[:, j] for j in range(table.shape[1])]


def _lexsort(columns: list[np.ndarray], count: int) -> np.ndarray:
    """Lexicographic order of ``count`` items by ``columns`` (most significant first), ties by
    original index. ``np.lexsort`` takes its primary key last, hence the reversal."""
    return np.lexsort([np.arange(count), *reversed(columns)]).astype(np.int64)


def _present(data: Data, key: str) -> bool:
    return key in data and data[key] is not None


def _tensor(data: Data, key: str, source: str) -> torch.Tensor:
    value = data[key]
    if not isinstance(value, torch.Tensor):
        raise DataContractError(source, key, "a tensor", type(value).__name__)
    return value


def canonicalise(data: Data, source: str | Path = "<graph>") -> dict[str, torch.Tensor]:
    """The graph's tensor fields (those present among :data:`TENSOR_FIELDS`) in canonical order.

    ``source`` only names the graph in errors. ``edge_weight`` and any ``batch`` that is not
    one entry per node are hashed as stored: the scheme does not reorder them.
    """
    source = str(source)
    tensors = {key: _tensor(data, key, source) for key in TENSOR_FIELDS if _present(data, key)}
    x = tensors.get("x")
    num_nodes = int(x.shape[0]) if x is not None and x.dim() > 0 else 0
    if x is not None and x.dim() == 0:
        raise DataContractError(source, "x", "a tensor with one row per node", "a 0-d tensor")
    new_id: np.ndarray | None = None
    if num_nodes:
        node_order = _lexsort(_checked_keys(x, num_nodes, source, "x"), num_nodes)
        perm = torch.from_numpy(node_order)
        tensors["x"] = x[perm]
        batch = tensors.get("batch")
        if batch is not None and batch.dim() > 0 and batch.shape[0] == num_nodes:
            tensors["batch"] = batch[perm]
        new_id = np.empty(num_nodes, dtype=np.int64)
        new_id[node_order] = np.arange(num_nodes)

    edge_index = tensors.get("edge_index")
    if edge_index is not None:
        tensors.update(_canonical_edges(edge_index, tensors.get("edge_attr"), new_id, source))
    return tensors


def _checked_keys(tensor: torch.Tensor, rows: int, source: str, key: str) -> list[np.ndarray]:
    try:
        return _sort_keys(tensor, rows)
    except TypeError as exc:
        raise DataContractError(source, key, "real or integer values", str(exc)) from None


def _canonical_edges(
    edge_index: torch.Tensor,
    edge_attr: torch.Tensor | None,
    new_id: np.ndarray | None,
    source: str,
) -> dict[str, torch.Tensor]:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.is_floating_point():
        raise DataContractError(
            source,
            "edge_index",
            "an integer [2, E] tensor",
            f"{edge_index.dtype} {tuple(edge_index.shape)}",
        )
    num_edges = int(edge_index.shape[1])
    index = edge_index.detach().cpu().to(torch.int64).numpy()
    if new_id is not None and num_edges:
        # Ids outside [0, N) name no node and keep their value: such graphs are refused by the
        # schema check, but hashing stays total so a manifest can still describe them.
        valid = (index >= 0) & (index < len(new_id))
        index = np.where(valid, new_id[np.where(valid, index, 0)], index)
    keys = [index[0], index[1]]
    per_edge_attr = (
        edge_attr is not None and edge_attr.dim() > 0 and edge_attr.shape[0] == num_edges
    )
    if per_edge_attr:
        keys += _checked_keys(edge_attr, num_edges, source, "edge_attr")
    order = torch.from_numpy(_lexsort(keys, num_edges))
    renumbered = torch.from_numpy(np.ascontiguousarray(index)).to(edge_index.dtype)
    result = {"edge_index": renumbered[:, order]}
    if per_edge_attr:
        result["edge_attr"] = edge_attr[order]
    return result


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 over ``str(dtype)``, ``repr(tuple(shape))`` (e.g. ``(57, 172)``) and the raw
    C-order bytes, exactly as the builder's validator computes it."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256()
    digest.update(str(tensor.dtype).encode("utf-8"))
    digest.update(repr(tuple(tensor.shape)).encode("utf-8"))
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metadata_digest(metadata: Any, source: str | Path = "<graph>") -> str:
    """sha256 over ``json.dumps(metadata, sort_keys=True)`` with json's default separators."""
    try:
        text = json.dumps(metadata, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise DataContractError(
            source, METADATA_FIELD, "JSON-serialisable metadata (it is hashed as JSON)", str(exc)
        ) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_entry(
    data: Data, source: str | Path = "<graph>", include_metadata: bool = True
) -> dict[str, str]:
    """Field -> digest for every field the graph has (``metadata`` unless excluded)."""
    entry = {key: tensor_digest(t) for key, t in canonicalise(data, source).items()}
    if include_metadata and _present(data, METADATA_FIELD):
        entry[METADATA_FIELD] = metadata_digest(data[METADATA_FIELD], source)
    return dict(sorted(entry.items()))


def verify_entry(
    data: Data, entry: dict[str, str], source: str | Path, ignore_metadata: bool = False
) -> None:
    """Raise :class:`DataContractError` (naming the graph file and field) unless every field
    ``entry`` lists is present in the graph and hashes to the listed digest."""
    source = str(source)
    for key in entry:
        if key not in MANIFEST_FIELDS:
            raise DataContractError(
                source,
                key,
                f"a field {GRAPH_MANIFEST} can hash ({', '.join(MANIFEST_FIELDS)})",
                repr(key),
            )
    # Fixed order (x first): a changed x also reorders edges, and x is the field to name.
    listed = [
        k for k in MANIFEST_FIELDS if k in entry and not (ignore_metadata and k == METADATA_FIELD)
    ]
    for key in listed:
        if not _present(data, key):
            raise DataContractError(
                source, key, f"a '{key}' field (listed in {GRAPH_MANIFEST})", "absent"
            )
    canonical = canonicalise(data, source) if any(k in TENSOR_FIELDS for k in listed) else {}
    for key in listed:
        if key == METADATA_FIELD:
            actual = metadata_digest(data[key], source)
        else:
            actual = tensor_digest(canonical[key])
        if actual != entry[key]:
            raise DataContractError(
                source,
                key,
                f"sha256 {entry[key][:12]}… from {GRAPH_MANIFEST}",
                f"{actual[:12]}… (the graph's content differs)",
            )


# --------------------------------------------------------------------------------------------
# Manifest files


def manifest_key(graph_key: str) -> str:
    """Manifest key of a graph listed by :func:`list_graph_files` (``T/M`` -> ``T/M.pt``)."""
    return f"{graph_key}.pt"


def read_manifest(path: str | Path) -> dict[str, dict[str, str]]:
    """A manifest file, checked for shape: graph key -> {field: 64-hex sha256}."""
    path = Path(path)
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataContractError(path, "<file>", 'a JSON object {"<TARGET>/<MODEL>.pt": {...}}')
    for key, entry in obj.items():
        if not key.endswith(".pt"):
            raise DataContractError(path, key, "graph keys of the form <TARGET>/<MODEL>.pt")
        if not isinstance(entry, dict) or not all(
            isinstance(v, str) and _HEX_DIGEST.fullmatch(v) for v in entry.values()
        ):
            raise DataContractError(
                path, key, "an object of field -> sha256 hex digest", json.dumps(entry)[:80]
            )
    return obj


def coverage_problems(
    manifest: dict[str, Any],
    graph_files: dict[str, Path],
    manifest_path: str | Path,
    graph_dir: str | Path,
) -> list[DataContractError]:
    """Graphs on disk without an entry, then entries without a graph on disk (sorted)."""
    on_disk = {manifest_key(k): p for k, p in graph_files.items()}
    root = Path(graph_dir)
    problems = [
        DataContractError(
            manifest_path,
            key,
            "an entry for every graph in the folder",
            f"none (graph {on_disk[key]} is not listed)",
        )
        for key in sorted(set(on_disk) - set(manifest))
    ]
    problems += [
        DataContractError(
            manifest_path,
            key,
            f"a graph file at {root / key}",
            "no such file (listed, not on disk)",
        )
        for key in sorted(set(manifest) - set(on_disk))
    ]
    return problems


# --------------------------------------------------------------------------------------------
# Whole folders (``graphqa validate``)


@dataclass(frozen=True)
class Problem:
    """One mismatch, picklable across worker processes (exceptions with custom __init__ are
    not): the graph's manifest key, the field, and the one-line message."""

    graph: str
    field: str
    message: str

    @classmethod
    def of(cls, graph: str, err: DataContractError) -> Problem:
        return cls(graph=graph, field=err.key, message=str(err))


@dataclass(frozen=True)
class _Job:
    key: str
    path: Path
    entry: dict[str, str] | None  # None: write mode (compute the entry)
    ignore_metadata: bool
    check: GraphCheck | None


@dataclass(frozen=True)
class _Result:
    key: str
    entry: dict[str, str] | None
    problem: Problem | None


def _run_job(job: _Job) -> _Result:
    try:
        data = load_graph(job.path)
        if job.check is not None:
            job.check(data, job.path)
        if job.entry is None:
            entry = manifest_entry(data, job.path, include_metadata=not job.ignore_metadata)
            return _Result(job.key, entry, None)
        verify_entry(data, job.entry, job.path, job.ignore_metadata)
        return _Result(job.key, None, None)
    except DataContractError as err:
        return _Result(job.key, None, Problem.of(job.key, err))


@dataclass
class FolderReport:
    """What a folder check found: graphs examined, problems (in a deterministic order), and
    in write mode the manifest that was (or, with problems, would have been) written."""

    graph_dir: Path
    manifest_path: Path
    graphs: int = 0
    problems: list[Problem] = field(default_factory=list)
    manifest: dict[str, dict[str, str]] | None = None
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class Progress:
    """``done/total``, rate and ETA on a stream, at most every ``interval`` seconds."""

    def __init__(self, total: int, stream: TextIO | None, interval: float = 2.0, label: str = ""):
        self.total, self.stream, self.interval, self.label = total, stream, interval, label
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.stream is None or (now - self.last < self.interval and done < self.total):
            return
        if done == self.total and now - self.start < self.interval:
            return  # short folders: the summary line is enough
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(
            f"{self.label}{done}/{self.total} graphs ({rate:.1f}/s, ETA {_duration(eta)})",
            file=self.stream,
            flush=True,
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _results(jobs: list[_Job], workers: int) -> Iterator[_Result]:
    """Job results in job order, from a process pool when ``workers > 1``."""
    if workers <= 1 or len(jobs) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: torch's thread pool costs ~6x here
        try:
            yield from map(_run_job, jobs)
        finally:
            torch.set_num_threads(threads)
        return
    chunk = max(1, min(16, len(jobs) // (workers * 16)))  # small: steady progress and ETA
    with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread) as pool:
        yield from pool.map(_run_job, jobs, chunksize=chunk)


def _one_thread() -> None:
    """Worker processes share the cores; torch's own thread pool would oversubscribe them."""
    torch.set_num_threads(1)


def check_folder(
    graph_dir: str | Path,
    manifest_path: str | Path | None = None,
    *,
    write: bool = False,
    ignore_metadata: bool = False,
    workers: int = 1,
    check: GraphCheck | None = None,
    progress: TextIO | None = None,
    progress_interval: float = 2.0,
) -> FolderReport:
    """Verify every graph of a folder against its manifest, or (``write``) hash them all and
    write the manifest, atomically and only if every graph loads and passes ``check``.

    Verification checks coverage both ways and every field each entry lists (``metadata`` is
    skipped with ``ignore_metadata``); writing omits ``metadata`` with ``ignore_metadata``, as
    the builder does. Problems are collected, not raised, so a user sees all of them at once.
    """
    graph_dir = Path(graph_dir)
    graph_files = list_graph_files(graph_dir)
    if not graph_files:
        raise DataContractError(
            graph_dir, "GRAPH_DIR", "a folder of <TARGET>/<MODEL>.pt graphs", "none"
        )
    manifest_path = Path(manifest_path) if manifest_path else graph_dir / GRAPH_MANIFEST
    report = FolderReport(graph_dir=graph_dir, manifest_path=manifest_path)
    if write:
        entries: dict[str, dict[str, str] | None] = {manifest_key(k): None for k in graph_files}
    else:
        if not manifest_path.is_file():
            raise DataContractError(
                manifest_path,
                "<file>",
                "a manifest to verify against (is GRAPH_DIR the builder's graph_data folder? "
                f"else write one: `graphqa validate {graph_dir} --write-manifest`)",
                "no such file",
            )
        manifest = read_manifest(manifest_path)
        report.problems += [
            Problem.of(e.key, e)
            for e in coverage_problems(manifest, graph_files, manifest_path, graph_dir)
        ]
        entries = {
            manifest_key(k): manifest[manifest_key(k)]
            for k in graph_files
            if manifest_key(k) in manifest
        }
    paths = {manifest_key(k): p for k, p in graph_files.items()}
    jobs = [_Job(k, paths[k], e, ignore_metadata, check) for k, e in entries.items()]
    meter = Progress(len(jobs), progress, progress_interval, label="validate: ")
    written: dict[str, dict[str, str]] = {}
    for done, result in enumerate(_results(jobs, workers), 1):
        report.graphs = done
        if result.problem is not None:
            report.problems.append(result.problem)
        elif result.entry is not None:
            written[result.key] = result.entry
        meter.update(done)
    report.fields = _field_counts(written.values() if write else entries.values(), ignore_metadata)
    if write:
        report.manifest = dict(sorted(written.items()))
        if report.ok:
            write_text_atomic(manifest_path, dump_json(report.manifest))
    return report


def _field_counts(
    entries: Iterable[dict[str, str] | None], ignore_metadata: bool
) -> dict[str, int]:
    counts = {key: 0 for key in MANIFEST_FIELDS}
    for entry in entries:
        for key in entry or {}:
            if key in counts and not (ignore_metadata and key == METADATA_FIELD):
                counts[key] += 1
    return {k: v for k, v in counts.items() if v}


def format_report(report: FolderReport, *, write: bool, limit: int = 10) -> list[str]:
    """Lines for the terminal: the first ``limit`` problems, then a one-line summary."""
    fields = ", ".join(f"{k} {v}" for k, v in report.fields.items()) or "no fields"
    name = report.manifest_path
    if report.ok:
        verb = "wrote" if write else "verified against"
        return [f"OK: {report.graphs} graphs {verb} {name} ({fields})"]
    lines = [p.message for p in report.problems[:limit]]
    more = len(report.problems) - limit
    if more > 0:
        lines.append(f"... and {more} more")
    bad = len({p.graph for p in report.problems})
    action = f"{name} not written" if write else f"verification against {name} failed"
    lines.append(f"FAILED: {len(report.problems)} problem(s) in {bad} graph(s); {action}")
    return lines
