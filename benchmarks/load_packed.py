"""Split loading: one ``.pt`` per graph vs. the packed split file written by the `schema` stage.

Why: the `schema` stage collates every split into one tensor file (``graphqa.data.PackedSplit``)
so that training never opens thousands of small files. This benchmark measures what that buys
on the same data, so the claim is a number rather than a guess:

(a) per-file: read the label CSV (``read_labels``), list and match the graph files, open each
    labelled graph with ``graphqa.contract.load_graph`` and build the PyG ``Data`` list that
    training consumes (``x``, ``edge_index``, ``edge_attr``, ``y``, ``target_id``, ``graph_id``);
(b) packed: ``PackedSplit.load(path).data_list()``.

Both ways run ``--repeats`` times, alternating, after one untimed warm-up pass each; the medians
are compared. The OS page cache cannot be dropped from here, so both are warm-cache timings (a
cold cache would penalise the per-file way further: one open/seek per graph). A sanity check
asserts that both ways yield identical tensors for a few graphs.

It uses an existing pipeline output if present (``data/dataset`` and ``data/schema`` relative to
the repo root); otherwise, or with ``--generate``, it generates the embedded dataset from
``params.yaml`` into a temporary folder and packs its train split with ``schema_stage``.

Usage::

    .venv/bin/python benchmarks/load_packed.py [--repeats 3] [--generate]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch_geometric.data import Data

from graphqa.config import load_params
from graphqa.contract import list_graph_files, load_graph
from graphqa.data import PackedSplit
from graphqa.dataset import dataset_stage
from graphqa.schema import match_labels, read_labels, schema_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRAPH_DIR = Path("data/dataset/graphs")
DEFAULT_LABELS = Path("data/dataset/labels/train.csv")
DEFAULT_PACKED = Path("data/schema/packed/train.pt")
COMPARED = ("x", "edge_index", "edge_attr", "y", "target_id", "graph_id")


@dataclass(frozen=True)
class Inputs:
    """Where the benchmark reads from and how those files came to be."""

    graph_dir: Path
    labels: Path
    packed: Path
    source: str


def load_per_file(graph_dir: Path, labels: Path, split: str = "train") -> list[Data]:
    """The split as training would see it if it read one graph file per decoy."""
    frame = read_labels(labels, split)
    files = list_graph_files(graph_dir)
    records, missing = match_labels(frame, files, labels, split)
    if missing:
        raise SystemExit(f"{labels}: {len(missing)} labels without a graph, e.g. {missing[0]}")
    index = {t: k for k, t in enumerate(sorted({r.target for r in records}))}
    graphs = []
    for i, record in enumerate(records):
        data = load_graph(files[record.key])
        graphs.append(
            Data(
                x=data.x,
                edge_index=data.edge_index,
                edge_attr=data.edge_attr,
                y=torch.tensor([record.dockq], dtype=torch.float32),
                target_id=torch.tensor([index[record.target]]),
                graph_id=torch.tensor([i]),
            )
        )
    return graphs


def load_packed(packed: Path) -> list[Data]:
    """The split as training actually loads it."""
    return PackedSplit.load(packed).data_list()


def timed(fn: Callable[[], list[Data]]) -> tuple[float, list[Data]]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def check_identical(per_file: list[Data], packed: list[Data], n_checks: int) -> list[int]:
    """Assert both ways agree on graph count and, for a few graphs, on every tensor."""
    assert len(per_file) == len(packed), f"graph count {len(per_file)} != {len(packed)}"
    n = len(packed)
    if n == 0:
        return []
    picks = sorted({round(k * (n - 1) / max(n_checks - 1, 1)) for k in range(n_checks)})
    for i in picks:
        for key in COMPARED:
            a, b = getattr(per_file[i], key), getattr(packed[i], key)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (
                f"graph {i}: '{key}' differs between per-file and packed "
                f"({a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}); "
                "is the packed file stale? re-run the `schema` stage"
            )
    return picks


def generated_inputs(params: Path, work: Path) -> Inputs:
    """Generate the embedded dataset into ``work`` and pack its train split."""
    cfg = load_params(params).dataset
    dataset_stage(cfg=cfg, out_dir=work / "dataset")
    labels = work / "dataset" / "labels" / "train.csv"
    schema_stage(
        graph_dir=work / "dataset" / "graphs",
        label_files={"train": str(labels)},
        out_dir=work / "schema",
    )
    return Inputs(
        graph_dir=work / "dataset" / "graphs",
        labels=labels,
        packed=work / "schema" / "packed" / "train.pt",
        source=f"generated from {params} into a temporary folder",
    )


def resolve(path: Path) -> Path:
    return path if path.is_absolute() else REPO_ROOT / path


def run(inputs: Inputs, repeats: int, n_checks: int) -> None:
    per_file_fn = partial(load_per_file, inputs.graph_dir, inputs.labels)
    packed_fn = partial(load_packed, inputs.packed)
    # Untimed warm-up of both ways, so neither pays for a cold page cache or lazy imports.
    per_file_graphs, packed_graphs = per_file_fn(), packed_fn()
    checked = check_identical(per_file_graphs, packed_graphs, n_checks)
    n_graphs = len(packed_graphs)
    del per_file_graphs, packed_graphs

    per_file_s, packed_s = [], []
    for _ in range(repeats):  # alternate so drifting machine load hits both ways alike
        per_file_s.append(timed(per_file_fn)[0])
        packed_s.append(timed(packed_fn)[0])
    t_file, t_packed = statistics.median(per_file_s), statistics.median(packed_s)
    ratio = t_file / t_packed

    print(f"data: {inputs.source}")
    print(f"  graphs  {inputs.graph_dir}")
    print(f"  labels  {inputs.labels}")
    print(f"  packed  {inputs.packed}")
    print(
        f"sanity: per-file and packed tensors identical for graphs {checked} "
        f"({', '.join(COMPARED)})"
    )
    print(f"median of {repeats} run(s), warm page cache for both (cache cannot be dropped here)")
    print()
    print(f"{'graphs':>8}  {'per-file s':>11}  {'packed s':>9}  {'ratio':>7}")
    print(f"{n_graphs:>8}  {t_file:>11.4f}  {t_packed:>9.4f}  {ratio:>6.1f}×")
    print()
    print(
        f"packed is {ratio:.1f}× faster ({n_graphs / t_file:,.0f} vs "
        f"{n_graphs / t_packed:,.0f} graphs/s)"
    )
    print(
        f"all runs (s): per-file {[round(s, 4) for s in per_file_s]}, "
        f"packed {[round(s, 4) for s in packed_s]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--graph-dir",
        type=Path,
        default=DEFAULT_GRAPH_DIR,
        help="graph folder (relative paths: to the repo root)",
    )
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="label CSV")
    parser.add_argument("--packed", type=Path, default=DEFAULT_PACKED, help="packed split file")
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file for --generate (dataset section)",
    )
    parser.add_argument(
        "--generate",
        action="store_true",
        help="generate a fresh dataset in a temporary folder even if data exists",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way (median)")
    parser.add_argument(
        "--checks", type=int, default=5, help="graphs compared tensor by tensor (sanity)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.checks < 1:
        parser.error("--repeats and --checks must be >= 1")

    existing = Inputs(
        graph_dir=resolve(args.graph_dir),
        labels=resolve(args.labels),
        packed=resolve(args.packed),
        source="existing pipeline output",
    )
    have = all(p.exists() for p in (existing.graph_dir, existing.labels, existing.packed))
    if have and not args.generate:
        run(existing, args.repeats, args.checks)
        return
    if not args.generate:
        print("no existing pipeline output found; generating one")
    with tempfile.TemporaryDirectory(prefix="graphqa-load-bench-") as tmp:
        run(generated_inputs(resolve(args.params), Path(tmp)), args.repeats, args.checks)


if __name__ == "__main__":
    main()
