"""Does one training stage give the same bytes every time, on every machine? Count the misses.

Why (issue 20): fresh clones sometimes reproduced a training stage with other bytes than the
committed ``dvc.lock``. The cause: MKL's reproducibility branch ``MKL_CBWR=AVX2`` exists on
Intel CPUs only; on an AMD CPU MKL silently runs ``AUTO`` (no reproducibility mode, AMD
kernels), so a lock written on one vendor's machine missed on the other's. graphqa now pins
``COMPATIBLE``, the branch both vendors run (``src/graphqa/numerics.py``).

This harness runs one training, each time a fresh process writing a fresh run folder, under
conditions a first run in a fresh clone may differ in, and counts the runs whose result files
differ from the reference:

- ``plain``     the stage as DVC starts it;
- ``no_aslr``   ``setarch -R``: address-space randomisation off (one fixed memory layout);
- ``env_pad``   a random-sized extra environment variable (shifts the stack and the heap);
- ``load``      two CPU-bound processes running beside it (the machine oversubscribed);
- ``cold``      no byte-code cache (``PYTHONPYCACHEPREFIX`` in a new empty folder), as a
                fresh ``.venv``'s first start, and a fresh working folder at another path;
- ``other_vendor`` MKL told the CPU is of the other vendor (Intel <-> AMD; ``tests/vendor.py``
                preloads ``tests/mkl_vendor.c``): the condition that missed before the fix.

The reference is the first ``plain`` run, or with ``--golden FILE`` a digest recorded on
another machine (``--write-golden FILE`` records one): that is the check across machines, and
the CI step (``.ci/run``) runs it on the tiny profile. ``--mkl-cbwr AVX2`` reruns the
measurement with the pre-fix pin. ``--trace`` adds a per-step record (batch, loss, gradients;
``benchmarks/determinism_trace/sitecustomize.py``); ``--diff TRACE_A TRACE_B`` prints where
two runs part.

Usage::

    .venv/bin/python benchmarks/determinism_harness.py --profile tiny --runs 10 \
        --conditions plain,no_aslr,env_pad,load,cold [--golden tests/golden/tiny_train.json]
    .venv/bin/python benchmarks/determinism_harness.py --profile default --epochs 8 --runs 5

``--profile default`` needs ``data/schema`` (``dvc repro schema``). Results: stdout and, with
``--record``, ``benchmarks/results/determinism_harness.txt``. Exit code 1 on any miss.
"""

from __future__ import annotations

# isort: off
import graphqa  # noqa: F401  (must come first: pins the numeric path before torch loads)

# isort: on
import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from graphqa.config import parse_params
from graphqa.dataset import dataset_stage
from graphqa.numerics import PINNED_ENV
from graphqa.schema import schema_stage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import TINY_OVERRIDES  # noqa: E402  (the test suite's tiny profile)
from tests.vendor import build_vendor_shim, host_is_intel, vendor_env  # noqa: E402

TRACE_DIR = ROOT / "benchmarks" / "determinism_trace"
RESULTS = ROOT / "benchmarks" / "results" / "determinism_harness.txt"
CONDITIONS = ("plain", "no_aslr", "env_pad", "load", "cold", "other_vendor")
SPLITS = ("train", "val", "val_calib", "test")
#: Starts the stage script with another MKL branch than the pin's (set before torch loads).
OTHER_BRANCH = (
    "import os, runpy, sys\n"
    "import graphqa\n"
    "os.environ['MKL_CBWR'] = os.environ['GRAPHQA_HARNESS_MKL_CBWR']\n"
    "import graphqa.train\n"
    "graphqa.train.check_pinned = lambda: None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_digest(run_dir: Path) -> dict[str, str]:
    """What must repeat: the per-epoch metrics (bytes) and every trained tensor (values)."""
    digests = {"metrics.csv": hashlib.sha256((run_dir / "metrics.csv").read_bytes()).hexdigest()}
    for name in ("last.ckpt", "best.ckpt", "averaged.ckpt"):
        path = run_dir / "checkpoints" / name
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            h = hashlib.sha256()
            for key in sorted(state):
                h.update(key.encode())
                h.update(state[key].numpy().tobytes())
            digests[name] = h.hexdigest()
    return {k: v[:16] for k, v in digests.items()}


def prepare(profile: str, work: Path, epochs: int | None) -> tuple[Path, Path]:
    """(params file, schema dir) for the profile: the default data or a generated tiny set."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["logging"]["progress"] = "none"
    if profile == "default":
        schema = ROOT / "data" / "schema"
        if not (schema / "packed" / "train.pt").exists():
            raise SystemExit(f"{schema}: missing; run `dvc repro schema` first")
    else:
        tiny = parse_params({}, TINY_OVERRIDES)
        dataset_stage(cfg=tiny.dataset, out_dir=work / "dataset")
        labels = work / "dataset" / "labels"
        schema = work / "schema"
        schema_stage(
            graph_dir=work / "dataset" / "graphs",
            label_files={s: str(labels / f"{s}.csv") for s in SPLITS},
            out_dir=schema,
        )
        for dotted, value in TINY_OVERRIDES.items():
            *parents, key = dotted.split(".")
            node = params
            for name in parents:
                node = node[name]
            node[key] = value
    if epochs is not None:
        params["trainer"]["max_epochs"] = epochs
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path, schema


def busy_loops(n: int) -> list[subprocess.Popen]:
    code = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def run_once(
    condition: str, k: int, work: Path, params: Path, schema: Path, args: argparse.Namespace
) -> tuple[dict[str, str], float]:
    out = work / "runs" / f"{k:03d}-{condition}"
    env = {**os.environ, "DVCLIVE_OPEN": "false"}
    cwd = ROOT
    script = "stages/train.py"
    if condition == "cold":
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.mkdtemp(dir=work, prefix="pyc-")))
        cwd = work / f"tree-{k:03d}-{'y' * (k % 7)}"
        for folder in ("stages", "masks"):
            shutil.copytree(ROOT / folder, cwd / folder)
        script = str(cwd / script)
    cmd = [sys.executable, script, "--params", str(params), "--seed", str(args.seed)]
    cmd += ["--schema-dir", str(schema), "--out", str(out)]
    if args.mkl_cbwr:
        env["GRAPHQA_HARNESS_MKL_CBWR"] = args.mkl_cbwr
        cmd = [sys.executable, "-c", OTHER_BRANCH, *cmd[1:]]
    if args.trace:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRACE_DIR), env.get("PYTHONPATH")]))
        env["GRAPHQA_TRACE_FILE"] = str(out) + ".trace"
    if condition == "no_aslr":
        cmd = ["setarch", "x86_64", "-R", *cmd]
    elif condition == "env_pad":
        env["GRAPHQA_HARNESS_PAD"] = "x" * random.Random(k).randrange(1, 65536)
    elif condition == "other_vendor":
        shim = build_vendor_shim(work)
        if shim is None:
            raise SystemExit("other_vendor: no C compiler (cc) to build tests/mkl_vendor.c")
        env.update(vendor_env(shim, intel=not host_is_intel()))
    load = busy_loops(2) if condition == "load" else []
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    finally:
        for p in load:
            p.kill()
    if proc.returncode != 0:
        raise SystemExit(f"run {k} ({condition}) failed:\n{proc.stderr[-3000:]}")
    return run_digest(out), time.perf_counter() - start


def first_difference(a: Path, b: Path) -> str:
    """The first line where two trace files differ (field by field)."""
    for n, (la, lb) in enumerate(
        zip(a.read_text().splitlines(), b.read_text().splitlines(), strict=False)
    ):
        if la != lb:
            fa, fb = la.split("\t"), lb.split("\t")
            diff = [f"{x} | {y}" for x, y in zip(fa, fb, strict=False) if x != y]
            return f"line {n + 1}: {fa[:3]}\n  " + "\n  ".join(diff)
    return "no difference in the common length"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("tiny", "default"), default="tiny")
    parser.add_argument("--runs", type=int, default=10, help="runs per condition")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mkl-cbwr", default=None, help="another MKL branch (pre-fix: AVX2)")
    parser.add_argument("--golden", type=Path, help="compare with a recorded digest")
    parser.add_argument("--write-golden", type=Path, help="record the reference digest")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS}")
    parser.add_argument("--work", type=Path, default=None, help="keep runs here")
    parser.add_argument("--diff", nargs=2, type=Path, metavar=("TRACE_A", "TRACE_B"))
    args = parser.parse_args()
    if args.diff:
        print(first_difference(*args.diff))
        return
    conditions = args.conditions.split(",")
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        parser.error(f"unknown condition(s) {unknown}; choose from {CONDITIONS}")
    work = args.work or Path(tempfile.mkdtemp(prefix="graphqa-determinism-"))
    work.mkdir(parents=True, exist_ok=True)
    params, schema = prepare(args.profile, work, args.epochs)
    branch = args.mkl_cbwr or PINNED_ENV["MKL_CBWR"]
    if args.golden:
        golden = json.loads(args.golden.read_text())
        asked = {"profile": args.profile, "seed": args.seed, "epochs": args.epochs}
        if {k: golden[k] for k in asked} != asked:
            parser.error(f"{args.golden}: recorded for {golden}, not for {asked}")
        reference, source = golden["digest"], f"{args.golden} ({golden['machine']})"
    else:
        reference, _ = run_once("plain", 0, work, params, schema, args)
        source = "plain run 0"
    if args.write_golden:
        machine = f"{os.uname().machine}, {cpu_model()}, MKL_CBWR={branch}"
        record = {"profile": args.profile, "seed": args.seed, "epochs": args.epochs}
        record.update(digest=reference, machine=machine)
        args.write_golden.write_text(json.dumps(record, indent=2) + "\n")
    print(f"reference ({source}): {reference}\nwork folder: {work}", flush=True)
    misses: dict[str, list[int]] = {c: [] for c in conditions}
    seconds: dict[str, list[float]] = {c: [] for c in conditions}
    k = 1
    for _ in range(args.runs):  # conditions interleaved: a slow drift hits them all alike
        for condition in conditions:
            digest, took = run_once(condition, k, work, params, schema, args)
            seconds[condition].append(took)
            if digest != reference:
                misses[condition].append(k)
            parted = sorted(f for f in reference if digest.get(f) != reference[f])
            mark = f"MISS {parted}" if parted else "ok"
            print(f"run {k:3d} {condition:8s} {mark} ({took:.0f} s)", flush=True)
            k += 1
    total = sum(len(m) for m in misses.values())
    lines = [
        f"$ {' '.join(sys.argv)}",
        f"{cpu_model()}; MKL_CBWR={branch}; profile {args.profile}; epochs "
        f"{args.epochs or 'params'}; seed {args.seed}; reference: {source}",
        f"{'condition':10s} {'runs':>5s} {'misses':>7s}  {'rate':>6s}  median s  missed runs",
    ]
    for c in conditions:
        n, m = len(seconds[c]), len(misses[c])
        if n:
            med = sorted(seconds[c])[n // 2]
            lines.append(f"{c:10s} {n:5d} {m:7d}  {m / n:6.1%}  {med:8.1f}  {misses[c]}")
    lines.append(f"{total} misses in {sum(len(s) for s in seconds.values())} runs")
    print("\n".join(lines))
    if args.record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as fh:
            fh.write("\n".join(lines) + "\n\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if total else 0)


def _cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_model() -> str:
    return f"{_cpuinfo('model name')} ({_cpuinfo('vendor_id')})"


if __name__ == "__main__":
    main()
