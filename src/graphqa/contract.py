"""The graph-builder data contract: how graphs, sidecars and labels sit on disk.

A graph folder holds ``<TARGET>/<MODEL>.pt`` (one PyG ``Data`` per decoy, no label inside) and
sidecars at its root: ``graph_metadata.json``, ``node_columns.json``, ``edge_columns.json``,
``topology_columns.json`` and ``graph_manifest.json`` (digest scheme: :mod:`graphqa.manifest`);
the builder's ``graph_builder_summary.json`` sits there or one level up. Labels are CSVs
``MODEL,dockq,capri``. Both the embedded generator and users' builders produce exactly this, so
one reader serves both.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

GRAPH_METADATA = "graph_metadata.json"
NODE_COLUMNS = "node_columns.json"
EDGE_COLUMNS = "edge_columns.json"
TOPOLOGY_COLUMNS = "topology_columns.json"
GRAPH_MANIFEST = "graph_manifest.json"
#: The builder's run summary: in the graph folder or (the builder's layout) its parent.
BUILDER_SUMMARY = "graph_builder_summary.json"
LABEL_COLUMNS = ("MODEL", "dockq", "capri")

#: The only classes a graph file may reference besides tensors and builtins.
GRAPH_SAFE_GLOBALS: list[Any] = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


class DataContractError(ValueError):
    """Input that breaks the contract; the message names file, key and what was expected."""

    def __init__(self, file: str | Path, key: str, expected: str, got: str | None = None):
        self.file, self.key, self.expected, self.got = str(file), key, expected, got
        detail = f"{self.file}: '{key}': expected {expected}"
        super().__init__(detail + (f", got {got}" if got is not None else ""))


def target_of(model: str) -> str:
    """Target id of a model: the file stem's prefix before the first ``_``."""
    return Path(model).name.split("_", 1)[0]


def load_graph(path: str | Path) -> Data:
    """Load one graph file without unpickling anything but PyG's data classes."""
    try:
        with torch.serialization.safe_globals(GRAPH_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:  # not a foreign class: garbage or a truncated file
            raise DataContractError(
                path,
                "<file>",
                "a torch.save'd torch_geometric Data object",
                "unreadable file (not a torch archive)",
            ) from None
        raise DataContractError(
            path,
            "<file>",
            "only tensors, builtins and torch_geometric Data classes",
            f"class {found.group(1)} (refused: graph files are never unpickled unsafely)",
        ) from None
    except Exception as exc:  # corrupt zip, truncated file ...
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise DataContractError(
            path,
            "<file>",
            "a torch.save'd torch_geometric Data object",
            f"unreadable file ({type(exc).__name__}: {first_line})",
        ) from None
    if not isinstance(obj, Data):
        raise DataContractError(path, "<file>", "a torch_geometric Data object", type(obj).__name__)
    return obj


def save_graph(data: Data, path: str | Path) -> None:
    """Write one graph file as a graph builder would (the embedded dataset uses it).

    Args:
        data: the graph.
        path: the ``.pt`` file to write.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a JSON file; every way it can be bad is one contract error naming the file.

    The one JSON reader of graphqa's own files: stage inputs, run summaries, bundle files
    (:func:`graphqa.report.read_json_or_note` turns its errors into notes instead).

    Args:
        path: the file.
        what: what the file holds, for the message (``the calibration policy``).

    Returns:
        The parsed value.

    Raises:
        DataContractError: the file is missing or unreadable, not UTF-8 or not valid JSON
            (key ``<file>``).
    """
    path = Path(path)
    about = f" ({what})" if what else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataContractError(path, "<file>", f"a JSON file{about}", "no such file") from None
    except OSError as exc:
        got = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        raise DataContractError(path, "<file>", f"a JSON file{about}", got) from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataContractError(
            path, "<file>", f"UTF-8 JSON text{about}", f"an undecodable byte at offset {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataContractError(path, "<file>", f"valid JSON{about}", str(exc)) from None


def list_graph_files(graph_dir: str | Path) -> dict[str, Path]:
    """``<TARGET>/<MODEL>`` (posix, no suffix) -> path, for every ``.pt`` below the folder."""
    root = Path(graph_dir)
    if not root.is_dir():
        raise DataContractError(
            root, "paths.graph_dir", "an existing folder of .pt graphs", "no such folder"
        )
    found = {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob("*.pt")}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class GraphRecord:
    """A labelled graph as the pipeline sees it."""

    key: str  # <TARGET>/<MODEL>, relative to the graph folder, no suffix
    model: str
    target: str
    dockq: float
    capri: str
