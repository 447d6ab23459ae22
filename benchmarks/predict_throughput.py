"""``graphqa predict`` throughput: graphs/s scoring a folder of ``.pt`` graph files.

Why: ``graphqa predict`` streams a graph folder from disk a batch at a time, validating every
graph against the bundle's schema before scoring it. This benchmark measures the graphs/s of
that path (target: >= 1,000 graphs/s on 2 cores) and where the time goes, so a slow stage is
a number with a profile rather than a guess.

Input: a temporary folder holding ``--copies`` hard links (copies where linking fails) of the
default dataset's graph folder (``data/dataset/graphs``, read-only) under renamed target
folders, plus its schema files; the bundle is ``runs/bundle`` (read-only). Both come from the
pipeline (``make repro``).

It reports, over ``--repeats`` runs of :func:`graphqa.predict.score_folder` (after one
untimed warm-up), median graphs/s of: the baseline measured in the same run, files read in
this process and the network on every core (the split of one pass into reading + validating
and network is printed under it); then ``graphqa predict``'s default, ``--workers`` reader
processes feeding a network on ``--threads`` threads, with its ratio to the baseline; with
``--compile`` the same with the ``torch.compile``'d network and its warm-up; finally one
end-to-end ``graphqa predict`` CLI run (process start, imports, CSV writing included).
``--profile`` prints the top cProfile entries.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--copies 4] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import torch

from graphqa.bundle import load_bundle
from graphqa.predict import (
    PREDICT_BATCH_SIZE,
    check_schema,
    default_readers,
    graph_refs,
    score_folder,
    stream_batches,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = 1000.0


def replicate(graph_dir: Path, out: Path, copies: int) -> int:
    """``copies`` replicas of every target folder (hard links), plus the schema files."""
    out.mkdir(parents=True)
    for meta in graph_dir.glob("*.json"):
        shutil.copy2(meta, out / meta.name)
    n = 0
    for k in range(copies):
        for target in sorted(p for p in graph_dir.iterdir() if p.is_dir()):
            dest = out / f"copy{k}-{target.name}"
            dest.mkdir()
            for graph in sorted(target.glob("*.pt")):
                try:
                    os.link(graph, dest / graph.name)
                except OSError:
                    shutil.copy2(graph, dest / graph.name)
                n += 1
    return n


def split_time(bundle, graph_dir: Path, batch_size: int) -> tuple[float, float]:
    """Seconds reading + validating vs. in the network, for one pass."""
    schema = check_schema(bundle.schema, graph_dir)
    refs, _ = graph_refs(graph_dir)
    read = net_s = 0.0
    stream = stream_batches(refs, schema, batch_size)
    while True:
        start = time.perf_counter()
        item = next(stream, None)
        read += time.perf_counter() - start
        if item is None:
            break
        _, batch = item
        start = time.perf_counter()
        with torch.no_grad():
            bundle.net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
        net_s += time.perf_counter() - start
    return read, net_s


def run(
    bundle, graph_dir: Path, n: int, repeats: int, batch_size: int, workers: int, label: str
) -> float:
    score_folder(bundle, graph_dir, batch_size=batch_size, workers=workers)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_folder(bundle, graph_dir, batch_size=batch_size, workers=workers)
        seconds.append(time.perf_counter() - start)
    rate = n / statistics.median(seconds)
    print(
        f"{label:<34} median {statistics.median(seconds):6.2f} s  {rate:7.1f} graphs/s  "
        f"(runs {[round(s, 2) for s in seconds]})"
    )
    return rate


def main() -> None:
    readers, net_threads = default_readers()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "runs/bundle")
    parser.add_argument("--graphs", type=Path, default=REPO_ROOT / "data/dataset/graphs")
    parser.add_argument("--copies", type=int, default=4, help="replicas of the graph folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=PREDICT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=readers, help="reader processes")
    parser.add_argument("--threads", type=int, default=net_threads, help="network threads")
    parser.add_argument("--compile", action="store_true", help="also time a compiled network")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    parser.add_argument(
        "--attention-kernel",
        choices=("fused", "pyg"),
        help="score with this attention path instead of the bundle's (same weights; the "
        "PyG path is the before-issue-22 baseline)",
    )
    args = parser.parse_args()
    if args.copies < 1 or args.repeats < 1:
        parser.error("--copies and --repeats must be >= 1")
    for path in (args.bundle, args.graphs):
        if not path.exists():
            raise SystemExit(f"{path}: not found; run the pipeline first (make repro)")
    bundle = load_bundle(args.bundle)
    if args.attention_kernel:
        config = dataclasses.replace(bundle.net.config, attention_kernel=args.attention_kernel)
        bundle.net.config = config
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="graphqa-predict-bench-") as tmp:
        graph_dir = Path(tmp) / "graphs"
        n = replicate(args.graphs, graph_dir, args.copies)
        print(
            f"{n} graphs ({args.copies} x {args.graphs.name}), batch size {args.batch_size}, "
            f"{cores} cores, shipped {bundle.scorer.family}, "
            f"attention {bundle.net.config.attention_kernel}"
        )
        # Baseline, same run: files read in this process, the network on every core.
        torch.set_num_threads(cores)
        base = run(bundle, graph_dir, n, args.repeats, args.batch_size, 0, "in-process read")
        read, net_s = split_time(bundle, graph_dir, args.batch_size)
        print(
            f"  one pass: read+validate {read:.2f} s ({n / read:.0f} graphs/s), "
            f"network {net_s:.2f} s ({n / net_s:.0f} graphs/s)"
        )
        torch.set_num_threads(args.threads)
        label = f"{args.workers} reader(s) + {args.threads} net thread(s)"
        rate = run(bundle, graph_dir, n, args.repeats, args.batch_size, args.workers, label)
        print(f"  ratio vs in-process read: {rate / base:.2f}x")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            score_folder(bundle, graph_dir, batch_size=args.batch_size, workers=args.workers)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        if args.compile:
            from graphqa.module import compiled

            eager_net = bundle.net
            bundle.net = compiled(eager_net)
            start = time.perf_counter()
            score_folder(bundle, graph_dir, batch_size=args.batch_size, workers=args.workers)
            print(f"compile warm-up (first pass): {time.perf_counter() - start:.1f} s")
            compiled_rate = run(
                bundle,
                graph_dir,
                n,
                args.repeats,
                args.batch_size,
                args.workers,
                f"{label}, compiled",
            )
            print(f"  ratio compiled vs eager: {compiled_rate / rate:.2f}x")
            bundle.net = eager_net
        out = Path(tmp) / "pred.csv"
        start = time.perf_counter()
        subprocess.run(
            [
                *(sys.executable, "-m", "graphqa.cli", "predict"),
                *("--bundle", str(args.bundle), "--graphs", str(graph_dir), "--out", str(out)),
            ],
            check=True,
            capture_output=True,
        )
        cli_s = time.perf_counter() - start
        print(f"CLI end to end: {cli_s:.2f} s, {n / cli_s:.1f} graphs/s (incl. start-up)")
    verdict = "MET" if rate >= TARGET else "NOT MET"
    print(f"target >= {TARGET:.0f} graphs/s (eager, defaults): {verdict}")


if __name__ == "__main__":
    main()
