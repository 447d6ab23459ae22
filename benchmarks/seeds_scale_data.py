"""A builder-format graph folder of the size real users train on (issue 22, "seeds scale").

Why: every speed figure of the project was measured on the embedded default (480 small train
graphs of 20-100 nodes, 8 neighbours). Real interface graphs are larger and heavy-tailed:
~8.7k graphs over ~300 targets, ~175 nodes and ~1,850 edges on average, up to ~1,700 nodes
and tens of thousands of edges, 172 node and 11 edge columns, ~1.9 GB of ``.pt``. This script
writes such a folder so that validate, schema, trees, training and predict can be timed where
users live (``benchmarks/scale_report.py``).

What it writes (``--out``, default ``/tmp/seeds_scale/seeds``)::

    graph_data/<TARGET>/<MODEL>.pt      one PyG Data per model (x float32 [N, 172],
                                        edge_index int64 [2, E], edge_attr float32 [E, 11],
                                        metadata dict)
    graph_data/node_columns.json, edge_columns.json, topology_columns.json,
    graph_data/graph_metadata.json      per-graph entries + _builder/_node_schema/... blocks
    graph_data/graph_manifest.json      the builder's canonical sha256 scheme
    graph_builder_summary.json          next to graph_data/, as the builder writes it
    labels/{train,val,val_calib,test,tuning}.csv   MODEL,dockq,capri (tuning header-only)
    seeds_scale.json                    generation params, size statistics and timing

The project's own code does the work wherever it exists: the embedded generator's latent plan
(per-decoy signal components, bimodal DockQ labels with per-target noise, target splits:
``graphqa.dataset._plan``), its graph recipe (``_make_graph``: residue one-hots and angles,
heavy-tailed ``rare_contacts_*`` count columns, 7 topology slots on scales 1-100, kNN edges with
a distance + 10-bin contact histogram), its sidecar writers (``_graph_metadata``,
``_builder_summary``, ``_frame``), ``graphqa.contract.save_graph``/``write_json`` and
``graphqa.manifest.manifest_entry`` (the builder's canonical manifest scheme). What differs
from the embedded default:

* sizes: node counts log-normal (sd of log 0.85, mean ``--mean-nodes`` = 175 after clipping
  to [20, 1700]), made of a per-target part (a target's models have similar interfaces), the
  planted ``structure`` component (bigger interfaces are a little better, as in the embedded
  set) and a per-model part; neighbours per node grow with the graph, k ~ sqrt(n/175) with a
  log-normal spread, scaled so edges average ``--edges-per-node`` (10.5) x mean nodes ~ 1,850
  and the largest graphs reach tens of thousands of edges;
* 172 node columns = the embedded 175 (32 residue, 3 count, 140 topology) minus the last 3
  topology columns (``pair.s1_s2.h1.betti_r4/r8/r12``, a noise slot), matching the real count;
* ``--targets`` (300) targets, ``--graphs`` (8,700) models in all (29 a target), split by
  target 70/10/10/10 % (train/val/val_calib/test), no train cap;
* graphs are drawn from per-graph random streams (seed, graph index), so the folder does not
  depend on the number of worker processes (``--workers``, default: all cores).

Labels keep the embedded default's hardness (``label_noise``, ``target_difficulty``,
``label_shape: bimodal`` from params.yaml): most DockQ < 0.1, ~20 % > 0.8, a learnable signal
spread over residue, topology, edge-histogram, count and size features.

Usage::

    .venv/bin/python benchmarks/seeds_scale_data.py [--graphs 8700] [--targets 300]
        [--out /tmp/seeds_scale/seeds] [--seed 7] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import numpy as np
import torch

from graphqa import dataset as ds
from graphqa.config import DatasetConfig, load_params
from graphqa.contract import (
    BUILDER_SUMMARY,
    EDGE_COLUMNS,
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    save_graph,
)
from graphqa.files import atomic_dir, write_json
from graphqa.manifest import manifest_entry

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAPH_SUBDIR = "graph_data"  # the builder's name (graphqa check-graphs finds it)
N_COUNT_COLUMNS = 3
N_NODE_COLUMNS = 172
MIN_NODES, MAX_NODES = 20, 1700
LOG_SD = 0.85  # sd of log(nodes) before clipping
K_EXPONENT = 0.5  # neighbours per node ~ (n / mean)^K_EXPONENT
K_LOG_SD = 0.25
SYMMETRY_FACTOR = 1.29  # edges of a symmetrised kNN graph ~ 1.29 n k here (measured)
SPLIT = {"train": 0.7, "val": 0.1, "val_calib": 0.1, "test": 0.1, "tuning": 0.0}
_STREAM_SIZES, _STREAM_GRAPH, _STREAM_COUNTS = 11, 12, 13  # spawn keys of our own streams


def node_columns() -> list[str]:
    """The 172 node columns: the embedded 175 minus the last three topology columns."""
    return ds.node_columns(N_COUNT_COLUMNS)[:N_NODE_COLUMNS]


def topology_columns() -> list[str]:
    n_topo = N_NODE_COLUMNS - len(ds.BASIC_COLUMNS) - N_COUNT_COLUMNS
    return ds.topology_columns()[:n_topo]


def dataset_config(graphs: int, targets: int, seed: int) -> DatasetConfig:
    """The embedded default's label settings (params.yaml) at this size and split."""
    base = load_params(REPO_ROOT / "params.yaml").dataset
    return base.model_copy(
        update={
            "seed": seed,
            "n_targets": targets,
            "models_per_target": math.ceil(graphs / targets),
            "count_columns": N_COUNT_COLUMNS,
            "train_models_cap": None,
            "split": base.split.model_copy(update=SPLIT),
        }
    )


def _kept(targets: int, per_target: int, graphs: int) -> np.ndarray:
    """Exactly ``graphs`` models, spread evenly: the first ``graphs % targets`` targets keep
    one more than the others (decoys are ordered target by target)."""
    base, extra = divmod(graphs, targets)
    return np.array(
        [m < base + (t < extra) for t in range(targets) for m in range(per_target)], dtype=bool
    )


def _clipped_mean_mu(z: np.ndarray, mean_nodes: float) -> float:
    """mu such that mean(clip(round(exp(mu + LOG_SD z)), MIN, MAX)) = mean_nodes (bisection)."""
    lo, hi = math.log(MIN_NODES) - 5, math.log(MAX_NODES) + 5
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = np.clip(np.exp(mid + LOG_SD * z), MIN_NODES, MAX_NODES).mean()
        lo, hi = (mid, hi) if mean < mean_nodes else (lo, mid)
    return (lo + hi) / 2


def graph_sizes(
    decoys: list[Any], seed: int, mean_nodes: float, edges_per_node: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and neighbours (k) per decoy: heavy-tailed, clustered by target, and carrying
    the planted ``structure`` component as the embedded generator's size does."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_SIZES,)))
    targets = sorted({d.target for d in decoys})
    target_z = dict(zip(targets, rng.standard_normal(len(targets)), strict=True))
    z = np.array(
        [
            0.5 * d.components["structure"] + 0.75 * target_z[d.target] + 0.43 * own
            for d, own in zip(decoys, rng.standard_normal(len(decoys)), strict=True)
        ]
    )
    z = z / z.std()
    mu = _clipped_mean_mu(z, mean_nodes)
    nodes = np.clip(np.round(np.exp(mu + LOG_SD * z)), MIN_NODES, MAX_NODES).astype(int)
    spread = np.exp(K_LOG_SD * rng.standard_normal(len(decoys)))
    shape = (nodes / mean_nodes) ** K_EXPONENT * spread
    # expected edges ~ SYMMETRY_FACTOR * n * k; scale k so their mean is edges_per_node * mean n
    scale = edges_per_node * nodes.mean() / (SYMMETRY_FACTOR * (nodes * shape).mean())
    k = np.clip(np.round(scale * shape), 2, nodes - 1).astype(int)
    return nodes, k


@dataclass(frozen=True)
class _Job:
    index: int
    decoy: Any
    count_component: float
    nodes: int
    k: int


_STATE: dict[str, Any] = {}


def _init_worker(cfg: DatasetConfig, graph_dir: str, seed: int) -> None:
    torch.set_num_threads(1)  # tiny tensors; the processes share the cores
    _STATE.update(cfg=cfg, graph_dir=Path(graph_dir), seed=seed)


def _make_one(job: _Job) -> dict[str, Any]:
    """Draw, save and hash one graph; return its metadata entry, manifest entry and sizes."""
    cfg, seed = _STATE["cfg"], _STATE["seed"]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_GRAPH, job.index)))
    count_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_STREAM_COUNTS, job.index))
    )
    # min = max = n: the embedded recipe draws exactly this graph size; knn = k per graph
    gcfg = cfg.model_copy(update={"min_nodes": job.nodes, "max_nodes": job.nodes, "knn": job.k})
    data = ds._make_graph(job.decoy, gcfg, rng, (count_rng, job.count_component))
    data.x = data.x[:, :N_NODE_COLUMNS].contiguous()
    key = f"{job.decoy.target}/{job.decoy.model}"
    path = _STATE["graph_dir"] / f"{key}.pt"
    save_graph(data, path)
    edges = int(data.edge_index.shape[1])
    return {
        "key": key,
        "manifest": manifest_entry(data, path),
        "metadata": {
            "edge_metadata": {"edge_count": edges, "feature_dim": len(ds.EDGE_COLUMN_NAMES)},
            "edge_module": ds.EDGE_MODULE,
            "edge_params": data.metadata["edge_params"],
            "node_feature_columns": node_columns(),
            "node_feature_dim": N_NODE_COLUMNS,
        },
        "nodes": job.nodes,
        "edges": edges,
        "bytes": path.stat().st_size,
    }


def _stats(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [50, 90, 99])
    return {
        "mean": round(float(values.mean()), 1),
        "median": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": int(values.max()),
        "min": int(values.min()),
    }


def generate(
    *,
    out: Path,
    graphs: int = 8700,
    targets: int = 300,
    seed: int = 7,
    workers: int | None = None,
    mean_nodes: float = 175.0,
    edges_per_node: float = 10.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the folder (atomically) and return the ``seeds_scale.json`` summary."""
    start = time.perf_counter()
    if graphs < 2 * targets:
        raise SystemExit(f"--graphs {graphs} must be >= 2 x --targets {targets}")
    workers = workers or os.cpu_count() or 1
    cfg = dataset_config(graphs, targets, seed)
    plan = ds._plan(cfg)
    kept = _kept(targets, cfg.models_per_target, graphs)
    plan.kept = kept  # _frame keeps exactly these rows
    nodes, ks = graph_sizes(plan.decoys, seed, mean_nodes, edges_per_node)
    jobs = [
        _Job(i, d, float(c), int(n), int(k))
        for i, (d, c, n, k, keep) in enumerate(
            zip(plan.decoys, plan.count_comps, nodes, ks, kept, strict=True)
        )
        if keep
    ]
    # largest first: the pool's tail is not one 1,700-node graph on one core
    jobs.sort(key=lambda j: -j.nodes * j.k)
    ncols, tcols = node_columns(), topology_columns()

    results: list[dict[str, Any]] = []
    with atomic_dir(out) as tmp:
        graph_dir = tmp / GRAPH_SUBDIR
        graph_dir.mkdir()
        init = (cfg, str(graph_dir), seed)
        if workers > 1:
            with Pool(workers, initializer=_init_worker, initargs=init) as pool:
                for done, result in enumerate(pool.imap_unordered(_make_one, jobs, 8), 1):
                    results.append(result)
                    _progress(progress, done, len(jobs), start)
        else:
            _init_worker(*init)
            for done, job in enumerate(jobs, 1):
                results.append(_make_one(job))
                _progress(progress, done, len(jobs), start)
        results.sort(key=lambda r: r["key"])
        entries = {r["key"]: r["metadata"] for r in results}
        metadata = ds._graph_metadata(entries, cfg, ncols, tcols)
        metadata["_builder"] = {
            "id": "graphqa.benchmarks.seeds_scale_data",
            "version": 1,
            "params": {
                **cfg.model_dump(mode="json", exclude={"min_nodes", "max_nodes", "knn"}),
                "graphs": graphs,
                "mean_nodes": mean_nodes,
                "node_range": [MIN_NODES, MAX_NODES],
                "edges_per_node": edges_per_node,
            },
        }
        write_json(graph_dir / GRAPH_METADATA, metadata)
        write_json(graph_dir / NODE_COLUMNS, ncols)
        write_json(graph_dir / EDGE_COLUMNS, ds.EDGE_COLUMN_NAMES)
        write_json(graph_dir / TOPOLOGY_COLUMNS, ["ID", *tcols])
        write_json(graph_dir / GRAPH_MANIFEST, {f"{r['key']}.pt": r["manifest"] for r in results})
        write_json(tmp / BUILDER_SUMMARY, ds._builder_summary(len(results), ncols, tcols))

        frame = ds._frame(plan)
        (tmp / "labels").mkdir()
        for name in ("train", "val", "val_calib", "test", "tuning"):
            part = frame[frame["split"] == name].drop(columns="split")
            part.to_csv(tmp / "labels" / f"{name}.csv", index=False, float_format="%.6f")

        node_counts = np.array([r["nodes"] for r in results])
        edge_counts = np.array([r["edges"] for r in results])
        labels = frame["dockq"].to_numpy()
        summary = {
            "graphs": len(results),
            "targets": targets,
            "seed": seed,
            "workers": workers,
            "seconds": round(time.perf_counter() - start, 1),
            "graphs_per_s": round(len(results) / (time.perf_counter() - start), 1),
            "node_columns": len(ncols),
            "edge_columns": len(ds.EDGE_COLUMN_NAMES),
            "nodes": _stats(node_counts),
            "edges": _stats(edge_counts),
            "edges_per_node": round(float(edge_counts.sum() / node_counts.sum()), 2),
            "pt_bytes": int(sum(r["bytes"] for r in results)),
            "splits": {
                name: {
                    "graphs": int((frame["split"] == name).sum()),
                    "targets": int(
                        frame.loc[frame["split"] == name, "MODEL"].str.split("_").str[0].nunique()
                    ),
                }
                for name in ("train", "val", "val_calib", "test")
            },
            "labels": {
                "below_0.1": round(float((labels < 0.1).mean()), 3),
                "above_0.8": round(float((labels > 0.8).mean()), 3),
            },
        }
        write_json(tmp / "seeds_scale.json", summary)
    summary["seconds"] = round(time.perf_counter() - start, 1)  # with the atomic swap
    return summary


def _progress(enabled: bool, done: int, total: int, start: float) -> None:
    if enabled and (done % 500 == 0 or done == total):
        rate = done / (time.perf_counter() - start)
        print(f"  {done}/{total} graphs ({rate:.0f}/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--graphs", type=int, default=8700)
    parser.add_argument("--targets", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("/tmp/seeds_scale/seeds"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    parser.add_argument("--mean-nodes", type=float, default=175.0)
    parser.add_argument("--edges-per-node", type=float, default=10.5)
    args = parser.parse_args()
    summary = generate(
        out=args.out,
        graphs=args.graphs,
        targets=args.targets,
        seed=args.seed,
        workers=args.workers,
        mean_nodes=args.mean_nodes,
        edges_per_node=args.edges_per_node,
    )
    gb = summary["pt_bytes"] / 1e9
    print(
        f"wrote {summary['graphs']} graphs ({summary['targets']} targets, {gb:.2f} GB of .pt) "
        f"to {args.out} in {summary['seconds']:.1f} s with {summary['workers']} process(es); "
        f"nodes mean {summary['nodes']['mean']} max {summary['nodes']['max']}, edges mean "
        f"{summary['edges']['mean']} max {summary['edges']['max']}; splits "
        + ", ".join(f"{k} {v['graphs']}" for k, v in summary["splits"].items())
    )


if __name__ == "__main__":
    main()
