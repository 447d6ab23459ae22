"""How graphqa's costs grow from the embedded default to the size real users train on.

Why (issue 22): every speed figure so far is on the embedded default (96 targets x 16 models,
20-100 nodes, knn 8; 480 train graphs). Users train on ~8.7k interface graphs of ~175 nodes
and ~1,850 edges (heavy tail to ~1,700 nodes / tens of thousands of edges). This report times
the pipeline's steps at several scales, fits how each cost grows with the number of graphs and
with graph size, and estimates the wall time of a full default pipeline at seeds scale.

Scales (``--scales``, comma-separated):

* ``1``, ``3``, ``10`` (any integer f): the embedded default f times over, written by the
  project's own generator (the ``dataset`` stage script with a params file whose
  ``dataset.n_targets`` = 96 f and ``dataset.train_models_cap`` = 480 f; everything else from
  params.yaml: 16 models a target, 20-100 nodes, knn 8, 175 node columns);
* ``seeds``: ``benchmarks/seeds_scale_data.py`` at its defaults (8,700 graphs, 300 targets,
  172 node columns, heavy-tailed sizes, ~1.9 GB of .pt); ``seeds:N``: the same distribution
  with N graphs (29 a target), to separate graph count from graph size.

Data go to ``--data-root`` (default ``/tmp/seeds_scale``) and are reused on later runs when
their parameters match (``--regenerate`` forces it). Per scale, each step runs as its own
child process, in a scratch folder under ``<data-root>/work/`` (never in the repo):

* ``validate``: ``graphqa validate GRAPH_DIR --workers 2`` (manifest check of every graph);
* ``schema``: ``stages/schema.py`` with a params file pointing ``paths.*`` at the folder
  (resolve, validate + verify the manifest, pack the splits);
* ``trees``: ``stages/trees.py`` (LightGBM on pooled features);
* ``train``: ``stages/train.py`` for ``--epochs`` epochs (early stopping off) -> per-training
  overhead (start-up, data load, checkpoints) beside the per-epoch cost;
* ``train_bench``: the code path of ``benchmarks/train_throughput.py`` (its functions,
  imported): one plain warm-up epoch, then ``--epochs`` epochs of Lightning ``trainer.fit``
  and of the plain PyTorch loop from the same initial weights -> train graphs/s (each epoch's
  time includes its validation pass), plus one inference pass over val;
* ``selection``, ``cv`` (every fold of ``cv.fold_ids``, one after the other, ``--epochs``
  epochs each), ``flt``, ``scorer``, ``calibration``, ``bundle``, ``evaluate``: those stage
  scripts on the 1-run sweep (the bundle is built the way the pipeline builds it: the trained
  model, its trees, the scorer's choice and a val_calib calibration);
* ``predict``: ``graphqa predict --bundle B --graphs GRAPH_DIR`` with its defaults (wall time
  end to end, and the graphs/s its own report gives for the scoring loop);
* ``md5``: md5 of every graph file and packed split in one process (what ``dvc repro`` hashes
  and caches at least once; a lower bound of DVC's own overhead).

Memory: ``peak_rss`` is the largest single process of the step's tree (``wait4`` rusage, as
``/usr/bin/time -v`` reports it); ``tree_rss`` the largest sum over the step's process tree,
sampled every 0.2 s (shared pages counted once per process). Timings are wall clock; the
1-minute load average is recorded at the start and end of every step, since the machine may
be shared. Files are in the page cache after generation (warm reads).

Usage::

    .venv/bin/python benchmarks/scale_report.py [--scales 1,3,10,seeds] [--epochs 2]
        [--data-root /tmp/seeds_scale] [--out benchmarks/results/scale_report.txt]
        [--skip md5,flt] [--regenerate]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import numpy as np
import psutil
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
PY = sys.executable
STAGES = REPO_ROOT / "stages"
EMBEDDED_TARGETS, EMBEDDED_CAP = 96, 480  # the embedded default (params.yaml dataset)
SEEDS_GRAPHS, SEEDS_TARGETS = 8700, 300
SEEDS_PER_TARGET = SEEDS_GRAPHS // SEEDS_TARGETS
STEPS = (
    "validate",
    "schema",
    "trees",
    "train",
    "train_bench",
    "selection",
    "cv",
    "flt",
    "scorer",
    "calibration",
    "bundle",
    "evaluate",
    "predict",
    "md5",
)
#: Figures a user measured on a real seeds-size folder (2 cores), printed beside ours.
USER_SEEDS = {
    "validate": "25 s (340 graphs/s), 0.4 GB",
    "schema": "70 s, 3.2 GB",
    "trees": "27 s, 2.7 GB",
    "train_bench": "Lightning 259, plain 277 graphs/s; epoch ~22 s",
}


# --------------------------------------------------------------------------------------------
# Child processes: wall time, peak memory, load


@dataclass
class Run:
    """One measured child process."""

    name: str
    seconds: float
    returncode: int
    peak_rss_mb: float  # largest single process (wait4 ru_maxrss)
    tree_rss_mb: float  # largest sampled sum over the process tree
    load_start: float
    load_end: float
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
            "tree_rss_mb": round(self.tree_rss_mb),
            "load_start": round(self.load_start, 2),
            "load_end": round(self.load_end, 2),
            **self.extra,
        }


def _sample_tree(pid: int, stop: threading.Event, peak: list[float]) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        peak[0] = max(peak[0], total / 2**20)
        stop.wait(0.2)


#: Extra environment of every child (``--threads`` adds OMP/MKL thread limits).
CHILD_ENV: dict[str, str] = {
    "PYTHONUNBUFFERED": "1",
    "DVCLIVE_OPEN": "false",
    "DVC_NO_ANALYTICS": "1",
}


def measure(
    name: str,
    cmd: list[str],
    cwd: Path,
    log_dir: Path,
    env_extra: dict[str, str | None] | None = None,
) -> Run:
    """Run ``cmd`` to completion (``env_extra``: None drops a variable); raise with its
    stderr tail if it fails."""
    env = {**os.environ, **CHILD_ENV}
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    load_start = os.getloadavg()[0]
    with out_path.open("w") as out, err_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=_sample_tree, args=(proc.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    run = Run(
        name=name,
        seconds=seconds,
        returncode=proc.returncode,
        peak_rss_mb=usage.ru_maxrss / 1024,
        tree_rss_mb=max(peak[0], usage.ru_maxrss / 1024),
        load_start=load_start,
        load_end=os.getloadavg()[0],
        stdout=out_path.read_text(),
        stderr=err_path.read_text(),
    )
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{name}: exit {run.returncode} ({' '.join(cmd)})\n{tail}")
    return run


# --------------------------------------------------------------------------------------------
# Scales and their data


@dataclass(frozen=True)
class Scale:
    name: str  # as given on the command line
    kind: str  # embedded | seeds
    factor: int = 1  # embedded
    graphs: int = SEEDS_GRAPHS  # seeds
    targets: int = SEEDS_TARGETS  # seeds

    @property
    def label(self) -> str:
        return f"{self.factor}x" if self.kind == "embedded" else f"seeds {self.graphs}"

    @property
    def slug(self) -> str:
        return f"embedded-x{self.factor}" if self.kind == "embedded" else f"seeds-{self.graphs}"


def parse_scale(spec: str) -> Scale:
    spec = spec.strip()
    if spec == "seeds":
        return Scale(spec, "seeds")
    if spec.startswith("seeds:"):
        graphs = int(spec.split(":", 1)[1])
        targets = max(20, round(graphs / SEEDS_PER_TARGET))
        return Scale(spec, "seeds", graphs=graphs, targets=targets)
    factor = int(spec)
    if factor < 1:
        raise ValueError(f"scale {spec!r}: an integer >= 1, 'seeds' or 'seeds:N'")
    return Scale(spec, "embedded", factor=factor)


@dataclass
class Folder:
    root: Path
    graph_dir: Path
    generation: dict[str, Any]

    def labels(self, split: str) -> Path:
        return self.root / "labels" / f"{split}.csv"


def embedded_overrides(factor: int) -> dict[str, Any]:
    return {
        "dataset.n_targets": EMBEDDED_TARGETS * factor,
        "dataset.train_models_cap": EMBEDDED_CAP * factor,
    }


def prepare_data(scale: Scale, data_root: Path, regenerate: bool) -> Folder:
    """Generate the scale's folder (or reuse it when its stamp matches) and time generation."""
    from graphqa.config import load_params

    root = data_root / scale.slug
    stamp_path = data_root / f"{scale.slug}.gen.json"
    if scale.kind == "embedded":
        params = load_params(REPO_ROOT / "params.yaml", embedded_overrides(scale.factor))
        wanted = {"generator": "graphqa.dataset", "dataset": params.dataset.model_dump(mode="json")}
        graph_dir = root / "graphs"
    else:
        wanted = {
            "generator": "benchmarks/seeds_scale_data.py",
            "graphs": scale.graphs,
            "targets": scale.targets,
            "seed": 7,
            "script_sha256": hashlib.sha256(
                (BENCH_DIR / "seeds_scale_data.py").read_bytes()
            ).hexdigest(),
        }
        graph_dir = root / "graph_data"
    if not regenerate and stamp_path.is_file() and graph_dir.is_dir():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("wanted") == wanted:
            print(f"[{scale.label}] reusing {root} (generated {stamp['when']})", flush=True)
            return Folder(root, graph_dir, {**stamp["run"], "reused": True})
    print(f"[{scale.label}] generating {root} ...", flush=True)
    work = data_root / "work" / "gen"
    work.mkdir(parents=True, exist_ok=True)
    if scale.kind == "embedded":
        params_file = work / f"{scale.slug}.params.yaml"
        params_file.write_text(yaml.safe_dump(params.to_dict()))
        cmd = [PY, str(STAGES / "dataset.py"), "--params", str(params_file), "--out", str(root)]
    else:
        cmd = [PY, str(BENCH_DIR / "seeds_scale_data.py"), "--graphs", str(scale.graphs)]
        cmd += ["--targets", str(scale.targets), "--seed", "7", "--out", str(root)]
    run = measure("generate", cmd, work, work / scale.slug)
    print(f"[{scale.label}] generated in {run.seconds:.1f} s", flush=True)
    info = {**run.row(), "stdout": run.stdout.strip().splitlines()[-1:]}
    stamp_path.write_text(
        json.dumps({"wanted": wanted, "when": dt.datetime.now().isoformat(), "run": info})
    )
    return Folder(root, graph_dir, {**info, "reused": False})


def scale_params(folder: Folder, epochs: int, threads: int) -> dict[str, Any]:
    """params.yaml with paths.* at the folder; a 1-seed sweep of ``epochs`` epochs
    (``threads`` > 0: trainer.num_threads)."""
    from graphqa.config import load_params

    overrides = {
        **({"trainer.num_threads": threads} if threads else {}),
        "paths.graph_dir": str(folder.graph_dir),
        **{f"paths.{s}_labels": str(folder.labels(s)) for s in ("train", "val", "test")},
        "paths.val_calib_labels": str(folder.labels("val_calib")),
        "paths.tuning_labels": str(folder.labels("tuning")),
        "paths.metadata_path": str(folder.graph_dir / "graph_metadata.json"),
        "paths.summary_path": str(folder.root / "graph_builder_summary.json"),
        "feature_mask.path": str(REPO_ROOT / "masks" / "all_features.json"),
        "logging.progress": "none",
        "mlflow.enabled": False,
        "trainer.max_epochs": epochs,
        "early_stopping.enabled": False,
        "sweep.seeds": [0],
    }
    return load_params(REPO_ROOT / "params.yaml", overrides).to_dict()


# --------------------------------------------------------------------------------------------
# One scale


def folder_stats(folder: Folder, schema_dir: Path) -> dict[str, Any]:
    """Graphs per split and size statistics, read off the packed splits."""
    from graphqa.data import PackedSplit

    nodes, edges, splits = [], [], {}
    for path in sorted((schema_dir / "packed").glob("*.pt")):
        split = PackedSplit.load(path)
        splits[path.stem] = len(split)
        nodes.append(np.diff(split.node_ptr.numpy()))
        edges.append(np.diff(split.edge_ptr.numpy()))
    n, e = np.concatenate(nodes), np.concatenate(edges)
    pt_bytes = sum(p.stat().st_size for p in folder.graph_dir.rglob("*.pt"))
    meta = json.loads((schema_dir / "feature_metadata.json").read_text())
    return {
        "graphs": len(n),
        "splits": splits,
        "targets": sum(1 for p in folder.graph_dir.iterdir() if p.is_dir()),
        "node_columns": meta["node"]["dim"],
        "edge_columns": meta["edge"]["dim"],
        "nodes_mean": round(float(n.mean()), 1),
        "nodes_max": int(n.max()),
        "edges_mean": round(float(e.mean()), 1),
        "edges_max": int(e.max()),
        "pt_gb": round(pt_bytes / 1e9, 3),
        "packed_gb": round(
            sum(p.stat().st_size for p in (schema_dir / "packed").glob("*.pt")) / 1e9, 3
        ),
    }


def _last_json(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed on a stream (graphqa predict's report)."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    return json.loads(text[start:])


def md5_files(paths: list[Path]) -> None:
    for path in paths:
        digest = hashlib.md5()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)


def run_scale(
    scale: Scale,
    folder: Folder,
    epochs: int,
    work_root: Path,
    skip: set[str],
    threads: int,
    contention_check: bool,
) -> dict[str, Any]:
    """Every step at one scale; returns {"stats": ..., "steps": {step: row}}."""
    from graphqa.files import write_json
    from graphqa.layout import MODEL_CARD, MODEL_FILES

    work = work_root / scale.slug
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = work / "logs"
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(scale_params(folder, epochs, threads)))
    P = ["--params", str(params_file)]
    schema, trees = work / "schema", work / "trees"
    train_root, selection = work / "train", work / "selection"
    model_dir, flt = work / "final_model", work / "flt"
    scorer, calib, bundle = work / "scorer", work / "calibration", work / "bundle"
    steps: dict[str, dict[str, Any]] = {}

    def step(name: str, cmd: list[str], **extra: Any) -> Run | None:
        if name in skip:
            return None
        print(f"[{scale.label}] {name} ...", end=" ", flush=True)
        run = measure(name, cmd, work, logs)
        run.extra.update(extra)
        steps[name] = run.row()
        print(f"{run.seconds:.1f} s, peak {run.peak_rss_mb:.0f} MB, load {run.load_start:.1f}")
        return run

    def stage(script: str, *rest: str) -> list[str]:
        return [PY, str(STAGES / script), *rest]

    cli = [PY, "-m", "graphqa.cli"]
    me = [PY, str(Path(__file__).resolve())]
    step("validate", [*cli, "validate", str(folder.graph_dir), "--workers", "2"])
    # schema is needed by everything after it: never skipped
    run = measure("schema", stage("schema.py", *P, "--out", str(schema)), work, logs)
    steps["schema"] = run.row()
    print(f"[{scale.label}] schema {run.seconds:.1f} s, peak {run.peak_rss_mb:.0f} MB", flush=True)
    stats = folder_stats(folder, schema)
    S = ["--schema-dir", str(schema)]
    step("trees", stage("trees.py", *P, *S, "--out", str(trees)))
    run_dir = train_root / "0-base"
    seed = ["--seed", "0", "--variant", "base"]
    step("train", stage("train.py", *P, *S, *seed, "--out", str(run_dir)), epochs=epochs)
    bench = work / "train_bench.json"
    bench_args = ["--epochs", str(epochs), "--json", str(bench)]
    run = step("train_bench", [*me, "--worker", "train", *P, *S, *bench_args])
    if run is not None:
        steps["train_bench"].update(json.loads(bench.read_text()))
    if contention_check and threads:
        # the same measurement with params.yaml's threads and no OMP limit
        default_file = work / "params_default_threads.yaml"
        default_file.write_text(yaml.safe_dump(scale_params(folder, epochs, 0)))
        print(f"[{scale.label}] train_bench_default ...", end=" ", flush=True)
        run = measure(
            "train_bench_default",
            [*me, "--worker", "train", "--params", str(default_file), *S, *bench_args],
            work,
            logs,
            env_extra={"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None},
        )
        steps["train_bench_default"] = {**run.row(), **json.loads(bench.read_text())}
        print(f"{run.seconds:.1f} s, load {run.load_start:.1f}")
    need_model = {"selection", "cv", "flt", "scorer", "calibration", "bundle", "evaluate"}
    need_model |= {"predict"}
    if need_model - skip and (train_root / "0-base" / "summary.json").exists():
        step(
            "selection",
            stage("selection.py", *P, "--train-root", str(train_root), "--out", str(selection)),
        )
        # final_model's layout (winner files + model card) from the 1-run sweep's winner
        model_dir.mkdir()
        for name in MODEL_FILES:
            shutil.copyfile(selection / "winner" / name, model_dir / name)
        write_json(model_dir / MODEL_CARD, {"model": "train/0-base", "reason": "scale_report"})
        ckpt = str(model_dir / "model.ckpt")
        model, tree_dir = ["--model-dir", str(model_dir)], ["--trees-dir", str(trees)]
        step("flt", stage("flt.py", *P, *S, "--model", ckpt, "--out", str(flt)))
        # the scorer judges on out-of-fold predictions: every cv fold, one after the other
        cv_root = work / "cv"
        folds = yaml.safe_load(params_file.read_text())["cv"]["fold_ids"]
        fold_cmds = [
            stage("cv.py", *P, *S, "--fold", str(k), "--out", str(cv_root / str(k))) for k in folds
        ]
        step("cv", ["bash", "-c", " && ".join(shlex.join(c) for c in fold_cmds)])
        cv = ["--cv-root", str(cv_root)]
        step("scorer", stage("scorer.py", *P, *S, *model, *tree_dir, *cv, "--out", str(scorer)))
        step(
            "calibration",
            stage(
                "calibration.py",
                *(*P, *S, "--model", ckpt, "--scorer", str(scorer / "scorer.json"), *tree_dir),
                *("--out", str(calib)),
            ),
        )
        step(
            "bundle",
            stage(
                "bundle.py",
                *(*model, "--calibration-dir", str(calib), *tree_dir),
                *("--scorer-dir", str(scorer), "--out", str(bundle)),
            ),
        )
        step(
            "evaluate",
            stage(
                "evaluate.py",
                *(*P, *S, "--bundle", str(bundle), "--scorer", str(scorer / "scorer.json")),
                *("--out", str(work / "evaluate")),
            ),
        )
        predict = [*cli, "predict", "--bundle", str(bundle), "--graphs", str(folder.graph_dir)]
        predict += ["--out", str(work / "predictions.csv")]
        run = step("predict", predict + (["--threads", str(threads)] if threads else []))
        if run is not None:
            report = _last_json(run.stderr)
            steps["predict"].update(
                loop_seconds=report["seconds"], loop_graphs_per_s=report["graphs_per_s"]
            )
    files = [str(p) for p in sorted(folder.graph_dir.rglob("*.pt"))]
    files += [str(p) for p in sorted((schema / "packed").glob("*.pt"))]
    files_list = work / "md5_files.json"
    files_list.write_text(json.dumps(files))
    run = step("md5", [*me, "--worker", "md5", "--json", str(files_list)])
    if run is not None:
        steps["md5"]["gb"] = round(sum(os.path.getsize(f) for f in files) / 1e9, 3)
    # the folders are large at seeds scale; keep the logs and small outputs only
    for big in (schema / "packed", work / "predictions.csv"):
        if big.is_dir():
            shutil.rmtree(big, ignore_errors=True)
        else:
            big.unlink(missing_ok=True)
    return {"stats": stats, "steps": steps, "generation": folder.generation}


# --------------------------------------------------------------------------------------------
# Workers (run as child processes of the report)


def worker_train(params_file: str, schema_dir: str, epochs: int, out: str) -> None:
    """``benchmarks/train_throughput.py``'s measurement, one repeat of each path."""
    sys.path.insert(0, str(BENCH_DIR))
    import torch
    import train_throughput as tt

    from graphqa.data import GraphQADataModule
    from graphqa.layout import FEATURE_METADATA
    from graphqa.model import build_net
    from graphqa.schema import FeatureSchema
    from graphqa.train import net_config_for

    tt.quiet_lightning()
    params = tt.bench_params(params_file, epochs)
    seed = params.dataloader.seed
    schema = FeatureSchema.load(Path(schema_dir) / FEATURE_METADATA)
    tt.prepare(params, seed)
    start = time.perf_counter()
    data = GraphQADataModule(
        Path(schema_dir) / "packed",
        batch_size=params.dataloader.batch_size,
        num_workers=params.dataloader.num_workers,
        seed=seed,
    )
    data.setup("fit")
    load_s = time.perf_counter() - start
    train = data.split("train")
    template = build_net(net_config_for(params, schema))
    template.fit_standardizers(train.x, train.edge_attr)
    tt.prepare(params, seed)
    start = time.perf_counter()
    tt.plain_loop(params, data, tt.fresh_net(template), 1)
    warm_s = time.perf_counter() - start
    lightning = tt.run_lightning(params, data, template, seed)
    plain = tt.run_plain(params, data, template, seed, epochs)
    # one inference pass over val (what selection-type stages repeat per candidate)
    net = tt.fresh_net(template).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in data.val_dataloader():
            net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
    val_s = time.perf_counter() - start
    result = {
        "train_graphs": len(train),
        "val_graphs": len(data.split("val")),
        "epochs": epochs,
        "load_seconds": round(load_s, 2),
        "warmup_epoch_seconds": round(warm_s, 2),
        "lightning_seconds": round(lightning.seconds, 2),
        "lightning_graphs_per_s": round(lightning.graphs_per_s, 1),
        "lightning_epoch_seconds": round(lightning.seconds / epochs, 2),
        "plain_seconds": round(plain.seconds, 2),
        "plain_graphs_per_s": round(plain.graphs_per_s, 1),
        "val_pass_seconds": round(val_s, 3),
        "val_pass_graphs_per_s": round(len(data.split("val")) / val_s, 1),
    }
    Path(out).write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------------------------
# Analysis: growth fits and the pipeline estimate

#: step -> (graphs it processes, from the stats) for graphs/s
RATE_BASIS = {
    "validate": "all",
    "schema": "all",
    "trees": "all",
    "flt": "val",
    "scorer": "val",
    "calibration": "val_calib",
    "evaluate": "test",
    "predict": "all",
    "md5": "all",
}


def basis_graphs(stats: dict[str, Any], basis: str) -> int:
    return stats["graphs"] if basis == "all" else stats["splits"].get(basis, 0)


def step_seconds(result: dict[str, Any], step: str) -> float | None:
    row = result["steps"].get(step)
    if row is None:
        return None
    if step == "train_bench":
        return row["lightning_epoch_seconds"]  # one epoch (train + val pass), Lightning
    return row["seconds"]


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Intercept and slope of least squares (the slope alone through 0 for one point)."""
    if len(x) == 1:
        return 0.0, y[0] / x[0]
    slope, intercept = np.polyfit(np.array(x, float), np.array(y, float), 1)
    return float(intercept), float(slope)


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2 or min(y) <= 0:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def growth(results: dict[str, dict[str, Any]], scales: list[Scale]) -> list[str]:
    """Per step and size family: seconds = fixed + marginal x graphs (least squares) and the
    log-log exponent; between families: the size exponent of the marginal cost."""
    lines = []
    families = {
        kind: [s for s in scales if s.kind == kind and s.name in results]
        for kind in ("embedded", "seeds")
    }
    header = (
        f"{'step':<12} {'emb fixed s':>11} {'ms/graph':>9} {'exp.':>5}  "
        f"{'seeds fixed s':>13} {'ms/graph':>9} {'exp.':>5}  {'cost ratio':>10} "
        f"{'size exp. edges':>15} {'nodes':>6} {'bytes':>6}"
    )
    lines += [header, "-" * len(header)]
    for step in STEPS:
        per: dict[str, Any] = {}
        for kind, members in families.items():
            pts = [(results[s.name]["stats"], step_seconds(results[s.name], step)) for s in members]
            pts = [(st, t) for st, t in pts if t is not None]
            if not pts:
                continue
            basis = "train" if step in ("train", "train_bench") else RATE_BASIS.get(step, "all")
            graphs = [basis_graphs(st, basis) for st, _ in pts]
            secs = [t for _, t in pts]
            intercept, slope = linear_fit(graphs, secs)
            per[kind] = {
                "fixed": intercept if len(pts) > 1 else None,
                "exp": loglog_slope(graphs, secs),
                "ms": 1000 * slope,
                "nodes": float(np.mean([st["nodes_mean"] for st, _ in pts])),
                "edges": float(np.mean([st["edges_mean"] for st, _ in pts])),
                "bytes": float(np.mean([st["pt_gb"] * 1e9 / st["graphs"] for st, _ in pts])),
            }
        if not per:
            continue
        emb, seeds = per.get("embedded") or {}, per.get("seeds") or {}
        ratio = size_e = size_n = size_b = None
        if emb and seeds and emb["ms"] > 0 and seeds["ms"] > 0:
            ratio = seeds["ms"] / emb["ms"]
            size_e = math.log(ratio) / math.log(seeds["edges"] / emb["edges"])
            size_n = math.log(ratio) / math.log(seeds["nodes"] / emb["nodes"])
            size_b = math.log(ratio) / math.log(seeds["bytes"] / emb["bytes"])
        lines.append(
            f"{step:<12} {_fmt(emb.get('fixed'), '.1f'):>11} {_fmt(emb.get('ms'), '.3f'):>9} "
            f"{_fmt(emb.get('exp')):>5}  {_fmt(seeds.get('fixed'), '.1f'):>13} "
            f"{_fmt(seeds.get('ms'), '.3f'):>9} {_fmt(seeds.get('exp')):>5}  "
            f"{_fmt(ratio, '.1f'):>10} {_fmt(size_e):>15} {_fmt(size_n):>6} {_fmt(size_b):>6}"
        )
    return lines


def memory_growth(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    """Per step: largest process's peak RSS = fixed + slope x GB of .pt, over every scale."""
    header = (
        f"{'step':<12} {'fixed GB':>8} {'GB per .pt GB':>13} {'at seeds size (2 GB)':>20} "
        f"{'at 5x seeds (10 GB)':>19}"
    )
    lines = [header, "-" * len(header)]
    for step in STEPS:
        pts = [
            (results[n]["stats"]["pt_gb"], results[n]["steps"][step]["peak_rss_mb"] / 1024)
            for n in names
            if step in results[n]["steps"]
        ]
        if len(pts) < 2:
            continue
        fixed, slope = linear_fit([p for p, _ in pts], [m for _, m in pts])
        lines.append(
            f"{step:<12} {fixed:>8.2f} {slope:>13.2f} {fixed + 2 * slope:>20.1f} "
            f"{fixed + 10 * slope:>19.1f}"
        )
    return lines


def training_epochs() -> dict[str, tuple[int, int]]:
    """Trainings of the default pipeline and each one's max epochs (params.yaml)."""
    from graphqa.config import load_params

    p = load_params(REPO_ROOT / "params.yaml")
    max_epochs = p.trainer.max_epochs
    out = {"train (sweep)": (len(p.sweep.seeds) * len(p.sweep.variants), max_epochs)}
    if p.finetune.enabled:
        phase1 = p.finetune.phase1.overrides.get("trainer.max_epochs", max_epochs)
        out["finetune_phase1"] = (1, phase1)
        out["finetune_phase2"] = (
            len(p.finetune.phase2.seeds),
            p.finetune.phase2.overrides.get("trainer.max_epochs", max_epochs),
        )
    # each fold trains on 3 of 5 folds of train + val and watches a fourth: about a train epoch
    out["cv (folds)"] = (len(p.cv.fold_ids), max_epochs)
    out["flt_retrain"] = (
        len(p.flt.keep_fracs) * len(p.flt.seeds),
        p.flt.retrain_overrides.get("trainer.max_epochs", max_epochs),
    )
    return out


#: The project's own measurement of the full default pipeline (README, "Speed targets"):
#: fresh clones, idle machine, 2 threads, early stopping on: 6 min 26 s - 6 min 52 s.
MEASURED_1X_PIPELINE_S = (386.0, 412.0)
#: A user's seeds-scale training epoch (6,090 train + 870 val graphs, 2 cores).
USER_SEEDS_EPOCH_S = 22.0


def pipeline_estimate(
    result: dict[str, Any], epochs_run: int, epoch_s: float | None = None
) -> tuple[float, list[str]]:
    """Wall time of a full default pipeline at this scale from the measured steps
    (``epoch_s``: use this training epoch instead of the measured one)."""
    st = result["steps"]
    bench = st.get("train_bench")
    if bench is None or "train" not in st:
        return float("nan"), ["(needs the train and train_bench steps)"]
    measured_epoch = bench["lightning_epoch_seconds"]
    overhead = max(0.0, st["train"]["seconds"] - epochs_run * measured_epoch)
    epoch_s = measured_epoch if epoch_s is None else epoch_s
    val_pass = bench["val_pass_seconds"]
    sel = st.get("selection", {}).get("seconds", 0.0)
    rows: list[tuple[str, int, float, str]] = [
        ("schema", 1, st["schema"]["seconds"], "measured"),
        ("trees", 1, st.get("trees", {}).get("seconds", 0.0), "measured"),
    ]
    trainings = 0
    for name, (count, max_ep) in training_epochs().items():
        trainings += count
        rows.append(
            (
                f"{name} ({max_ep} ep.)",
                count,
                overhead + max_ep * epoch_s,
                f"{overhead:.1f} s overhead + {max_ep} x {epoch_s:.1f} s/epoch",
            )
        )
    rows += [
        ("selection", 1, sel, "measured"),
        ("final_selection", 1, sel + 5 * val_pass, "selection + 5 val passes"),
        ("flt", 1, st.get("flt", {}).get("seconds", 0.0), "measured"),
        ("flt_summary", 1, sel + 12 * val_pass, "selection + 12 val passes"),
        ("final_model", 1, sel, "~ selection (copies)"),
    ]
    for name in ("scorer", "calibration", "bundle", "evaluate"):
        rows.append((name, 1, st.get(name, {}).get("seconds", 0.0), "measured"))
    total = sum(count * secs for _, count, secs, _ in rows)
    lines = [f"{'stage':<28} {'runs':>4} {'s each':>8} {'s total':>8}  basis"]
    lines += [f"{n:<28} {c:>4} {s:>8.1f} {c * s:>8.1f}  {why}" for n, c, s, why in rows]
    lines.append(
        f"{'total (' + str(trainings) + ' trainings)':<28} {'':>4} {'':>8} {total:>8.0f}  "
        f"= {total / 60:.1f} min"
    )
    return total, lines


# --------------------------------------------------------------------------------------------
# The report


def fmt_rss(row: dict[str, Any]) -> str:
    return f"{row['peak_rss_mb'] / 1024:.2f}/{row['tree_rss_mb'] / 1024:.2f}"


def report_lines(
    results: dict[str, dict[str, Any]],
    scales: list[Scale],
    args: argparse.Namespace,
    wall: float,
    date: str,
) -> list[str]:
    names = [s.name for s in scales if s.name in results]
    by_name = {s.name: s for s in scales}
    lines = [
        f"# .venv/bin/python benchmarks/scale_report.py --scales {args.scales} --epochs "
        f"{args.epochs}"
        + (f" --threads {args.threads}" if args.threads else "")
        + (" --contention-check" if args.contention_check else "")
        + (f" --skip {args.skip}" if args.skip else ""),
        f"# {date}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, no GPU, {platform.python_version()}; "
        f"report wall time {wall / 60:.1f} min",
        *(
            [f"# (text rendered from the run's raw numbers: --from-json {args.rendered_from})"]
            if getattr(args, "rendered_from", None)
            else []
        ),
        "# The machine was shared with another engineer's CPU-heavy jobs: the 1-min load "
        "average at each step's start/end is listed (2 cores: load > 2 = oversubscribed), so "
        "timings are upper bounds of an idle machine's.",
        "",
        "## Data",
        "",
    ]
    head = (
        f"{'scale':<12} {'graphs':>6} {'targets':>7} {'train/val/vc/test':>20} {'ncol':>4} "
        f"{'nodes mean/max':>15} {'edges mean/max':>16} {'.pt GB':>7} {'packed GB':>9} "
        f"{'generated in':>14}"
    )
    lines += [head, "-" * len(head)]
    for name in names:
        st, gen = results[name]["stats"], results[name]["generation"]
        sp = st["splits"]
        split = "/".join(str(sp.get(k, 0)) for k in ("train", "val", "val_calib", "test"))
        reused = " (earlier)" if gen.get("reused") else ""
        lines.append(
            f"{by_name[name].label:<12} {st['graphs']:>6} {st['targets']:>7} {split:>20} "
            f"{st['node_columns']:>4} {st['nodes_mean']:>7.1f}/{st['nodes_max']:<7} "
            f"{st['edges_mean']:>7.0f}/{st['edges_max']:<8} {st['pt_gb']:>7.2f} "
            f"{st['packed_gb']:>9.2f} {gen['seconds']:>7.1f} s{reused}"
        )
    lines += [
        "",
        "Embedded scales: the project's generator (stages/dataset.py, dataset.n_targets = 96 f, "
        "train_models_cap = 480 f; 1 process). Seeds scales: benchmarks/seeds_scale_data.py "
        "(2 processes). 'generated in' is the generator's wall time (incl. hashing the manifest).",
        "",
        "## Steps: wall seconds and graphs/s (graphs the step processes / wall s)",
        "",
    ]
    head = f"{'step':<13}" + "".join(f"{by_name[n].label:>22}" for n in names)
    lines += [head, "-" * len(head)]
    for step in STEPS:
        cells = []
        for name in names:
            res = results[name]
            row = res["steps"].get(step)
            if row is None:
                cells.append(f"{'-':>22}")
                continue
            if step == "train_bench":
                lightning, plain = row["lightning_graphs_per_s"], row["plain_graphs_per_s"]
                cell = f"L {lightning:.0f} / P {plain:.0f} g/s"
            elif step == "train":
                cell = f"{row['seconds']:.1f} s ({row['epochs']} ep.)"
            elif step == "predict":
                cell = f"{row['seconds']:.1f} s {row['loop_graphs_per_s']:.0f} g/s"
            else:
                graphs = basis_graphs(res["stats"], RATE_BASIS.get(step, "all"))
                rate = graphs / row["seconds"] if row["seconds"] else 0
                cell = f"{row['seconds']:.1f} s {rate:.0f} g/s"
            cells.append(f"{cell:>22}")
        lines.append(f"{step:<13}" + "".join(cells))
    lines += [
        "",
        "train = the train stage for --epochs epochs (start-up, data load, fit with a val pass "
        "per epoch, checkpoints, DVCLive). train_bench = train_throughput.py's path: "
        "L = Lightning trainer.fit, P = plain PyTorch loop, train graphs/s over --epochs "
        "epochs (each epoch's val pass inside the timing). predict g/s = the scoring loop's own "
        "rate from graphqa predict's report (the wall time also holds start-up and CSV "
        "writing); flt/scorer g/s count val graphs, calibration val_calib, evaluate test.",
        "",
        "## Per step: peak RSS GB (largest process / process-tree sum) and load average",
        "",
    ]
    head = f"{'step':<13}" + "".join(f"{by_name[n].label:>24}" for n in names)
    lines += [head, "-" * len(head)]
    for step in STEPS:
        cells = []
        for name in names:
            row = results[name]["steps"].get(step)
            cell = (
                "-"
                if row is None
                else (f"{fmt_rss(row)} GB  {row['load_start']:.1f}>{row['load_end']:.1f}")
            )
            cells.append(f"{cell:>24}")
        lines.append(f"{step:<13}" + "".join(cells))
    lines += ["", "## Training detail", ""]
    threads = f"{args.threads} thread(s) (--threads)" if args.threads else "params.yaml's threads"
    lines.append(f"Every step ran with {threads}.")
    for name in names:
        other = results[name]["steps"].get("train_bench_default")
        if other is not None:
            mine = results[name]["steps"].get("train_bench", {})
            lines.append(
                f"{by_name[name].label:<12} contention check, same measurement with params.yaml's "
                f"threads and no OMP limit: Lightning {other['lightning_graphs_per_s']:.0f} g/s, "
                f"plain {other['plain_graphs_per_s']:.0f} g/s (load "
                f"{other['load_start']:.1f}>{other['load_end']:.1f}) vs "
                f"{mine.get('lightning_graphs_per_s', float('nan')):.0f} / "
                f"{mine.get('plain_graphs_per_s', float('nan')):.0f} g/s with {args.threads}"
            )
    for name in names:
        row = results[name]["steps"].get("train_bench")
        train = results[name]["steps"].get("train")
        if row is None:
            continue
        lines.append(
            f"{by_name[name].label:<12} train {row['train_graphs']}, val {row['val_graphs']}: "
            f"packed load {row['load_seconds']:.1f} s, warm-up plain epoch "
            f"{row['warmup_epoch_seconds']:.1f} s, Lightning {row['lightning_epoch_seconds']:.1f} "
            f"s/epoch ({row['lightning_graphs_per_s']:.0f} g/s), plain "
            f"{row['plain_seconds'] / row['epochs']:.1f} s/epoch ({row['plain_graphs_per_s']:.0f} "
            f"g/s), val inference pass {row['val_pass_seconds']:.2f} s "
            f"({row['val_pass_graphs_per_s']:.0f} g/s)"
            + (
                f"; train stage {train['seconds']:.1f} s for {train['epochs']} epochs"
                if train
                else ""
            )
        )
    seeds = [n for n in names if by_name[n].name == "seeds"]
    if seeds:
        st = results[seeds[0]]["steps"]
        lines += ["", "## Seeds scale beside the user's measurement on a real folder (2 cores)", ""]
        for step, theirs in USER_SEEDS.items():
            row = st.get(step)
            if row is None:
                continue
            if step == "train_bench":
                ours = (
                    f"Lightning {row['lightning_graphs_per_s']:.0f}, plain "
                    f"{row['plain_graphs_per_s']:.0f} graphs/s; epoch "
                    f"{row['lightning_epoch_seconds']:.1f} s"
                )
            else:
                g = results[seeds[0]]["stats"]["graphs"]
                ours = (
                    f"{row['seconds']:.0f} s ({g / row['seconds']:.0f} graphs/s), "
                    f"{row['peak_rss_mb'] / 1024:.1f} GB (tree {row['tree_rss_mb'] / 1024:.1f})"
                )
            lines.append(f"{step:<12} ours: {ours:<62} user: {theirs}")
    lines += [
        "",
        "## Growth: how each cost scales",
        "",
        "Per size family (embedded 1x/3x/10x; seeds-size folders of 1,248 and 8,700 graphs): "
        "a least-squares line seconds = fixed + ms/graph x graphs (per train graph for "
        "train/train_bench, per val/val_calib/test graph for the stages scoring those; fixed = "
        "process start-up, imports and other per-run work), and exp. = slope of log(seconds) vs "
        "log(graphs) (1 = linear; below 1 where the fixed part still dominates). "
        "cost ratio = seeds-size ms/graph over embedded ms/graph; size exp. = log(cost ratio) / "
        "log(size ratio), for mean edges, mean nodes and .pt bytes per graph: 1 = cost "
        "proportional to that size. train uses the train stage's wall (fixed start-up included), "
        "train_bench one Lightning epoch.",
        "",
        *growth(results, scales),
        "",
        "Memory: the largest process's peak RSS against the folder's .pt GB, a least-squares "
        "line over every scale (both size families), and where it lands for a 2 GB folder "
        "(seeds scale) and a 10 GB one (extrapolated).",
        "",
        *memory_growth(results, names),
        "",
        "## Full default pipeline estimate",
        "",
        "Model: every stage a fresh process as under `dvc repro`; 19 trainings each run their "
        "max epochs from params.yaml (upper bound: early stopping can end the 30-epoch sweep "
        "trainings and the retrains sooner); per-training overhead = the train stage's wall "
        "minus its epochs at the train_bench Lightning s/epoch; selection-type stages not run "
        "here are the selection stage plus the val passes they score; the dataset stage is "
        "left out (users bring their own folder) and so is DVC's own hashing/caching (see md5: "
        "it hashes the graph folder and the packed splits at least once, and caches them).",
        "",
    ]
    totals = {}
    for name in names:
        total, est = pipeline_estimate(results[name], args.epochs)
        totals[name] = total
        lines += [f"### {by_name[name].label}: {total / 60:.1f} min", "", *est, ""]
    lines += ["### Cross-checks", ""]
    if "1" in totals and math.isfinite(totals["1"]):
        lo, hi = MEASURED_1X_PIPELINE_S
        ratio = (lo + hi) / 2 / totals["1"]
        lines.append(
            f"1x: this model gives {totals['1'] / 60:.1f} min on this run's numbers; the project "
            f"measured {lo / 60:.1f}-{hi / 60:.1f} min for the real full default pipeline (idle, "
            f"2 threads, early stopping on; README). Ratio measured/model = {ratio:.2f}."
        )
        for name in names:
            if by_name[name].kind == "seeds" and math.isfinite(totals[name]):
                lines.append(
                    f"{by_name[name].label}: model {totals[name] / 60:.1f} min x {ratio:.2f} = "
                    f"{totals[name] * ratio / 60:.1f} min as an idle-machine guess (assumes the "
                    "same ratio at this size: same load, thread and early-stopping effects)."
                )
    for name in names:
        if by_name[name].name == "seeds" and math.isfinite(totals[name]):
            alt, _ = pipeline_estimate(results[name], args.epochs, USER_SEEDS_EPOCH_S)
            lines.append(
                f"seeds: with the user's measured epoch ({USER_SEEDS_EPOCH_S:.0f} s, 2 cores) in "
                f"place of ours and every other cost as measured here: {alt / 60:.1f} min."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--scales", default="1,3,10,seeds")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=Path("/tmp/seeds_scale"))
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "scale_report.txt")
    parser.add_argument("--skip", default="", help=f"steps to leave out, of {','.join(STEPS)}")
    parser.add_argument("--regenerate", action="store_true", help="write every folder anew")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="N > 0: torch/OpenMP threads of every step (trainer.num_threads, predict "
        "--threads, OMP_NUM_THREADS); 0: params.yaml's and the libraries' defaults",
    )
    parser.add_argument(
        "--contention-check",
        action="store_true",
        help="with --threads: at the first scale also run train_bench with the default threads",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="write (or check) the folders and stop"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="re-render the report from a raw JSON of an earlier run (no measurements)",
    )
    parser.add_argument("--worker", choices=("train", "md5"), help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--schema-dir", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "train":
        worker_train(args.params, args.schema_dir, args.epochs, args.json)
        return
    if args.worker == "md5":
        md5_files([Path(p) for p in json.loads(Path(args.json).read_text())])
        return
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(STEPS)
    if unknown or "schema" in skip:
        parser.error(f"--skip: unknown or required step(s) {sorted(unknown | (skip & {'schema'}))}")
    scales = [parse_scale(s) for s in args.scales.split(",") if s.strip()]
    if args.threads:
        CHILD_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    raw_path = args.data_root / "scale_report.json"
    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        meta, results = raw["meta"], raw["results"]
        for key in ("scales", "epochs", "threads", "contention_check", "skip"):
            setattr(args, key, meta["args"][key])
        scales = [parse_scale(s) for s in args.scales.split(",") if s.strip()]
        args.rendered_from = args.from_json
        write_report(results, scales, args, meta["wall_seconds"], meta["date"])
        return
    if args.generate_only:
        for scale in scales:
            folder = prepare_data(scale, args.data_root, args.regenerate)
            print(f"[{scale.label}] {folder.root}: {folder.generation['seconds']:.1f} s")
        return
    for scale in scales:
        folder = prepare_data(scale, args.data_root, args.regenerate)
        results[scale.name] = run_scale(
            scale,
            folder,
            args.epochs,
            args.data_root / "work",
            skip,
            args.threads,
            args.contention_check and scale is scales[0],
        )
        meta = {
            "args": {
                k: getattr(args, k)
                for k in ("scales", "epochs", "threads", "contention_check", "skip")
            },
            "date": dt.date.today().isoformat(),
            "wall_seconds": round(time.perf_counter() - start, 1),
        }
        raw_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    write_report(results, scales, args, meta["wall_seconds"], meta["date"])
    shutil.copyfile(raw_path, args.out.with_suffix(".json"))
    print(f"raw numbers in {raw_path} and {args.out.with_suffix('.json')}")


def write_report(
    results: dict[str, dict[str, Any]],
    scales: list[Scale],
    args: argparse.Namespace,
    wall: float,
    date: str,
) -> None:
    text = "\n".join(report_lines(results, scales, args, wall, date)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
