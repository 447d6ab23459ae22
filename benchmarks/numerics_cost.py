"""What pinning the numeric path to AVX2 costs, and what it buys.

graphqa pins PyTorch, MKL, oneDNN, NumPy and OpenBLAS to their AVX2 kernels in every process
(:mod:`graphqa.numerics`) so a fresh clone reproduces the committed ``dvc.lock`` on any x86-64
machine. This benchmark trains the same model on the same packed data in fresh processes:

* ``pinned``: graphqa's default;
* ``native``: ``GRAPHQA_NATIVE_NUMERICS=1``, the host's own kernels (AVX-512 where present);
* ``avx2-host``: pinned, with MKL additionally told the CPU has nothing beyond AVX2
  (``MKL_ENABLE_INSTRUCTIONS=AVX2``), the closest this machine gets to an AVX2-only host;
* ``mkl-avx2``: the pin before issue 20, MKL asked for its Intel-only AVX2 branch
  (``MKL_CBWR=AVX2``; on an AMD CPU MKL runs ``AUTO`` instead): what the vendor-independent
  ``COMPATIBLE`` branch costs against it.

It prints the median training time of each (measurements alternate, so load from other
processes hits both alike), the pinned/native time ratio (the cost), and a hash of the trained
weights per run: pinned runs must agree with each other and with ``avx2-host`` (the guarantee);
native runs show what the guarantee replaces.

Usage::

    .venv/bin/python benchmarks/numerics_cost.py [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from graphqa.numerics import OPT_OUT, PINNED_ENV

CHILD = """
import hashlib, json, os, sys, time
import graphqa  # pins (or not) before torch loads
branch = os.environ.get("GRAPHQA_BENCH_MKL_CBWR")
if branch:  # another MKL branch than the pin's, set before torch (and MKL) loads
    os.environ["MKL_CBWR"] = branch
    import graphqa.train
    graphqa.train.check_pinned = lambda: None
import torch
from graphqa.config import load_params
from graphqa.train import train_stage
params = load_params(sys.argv[1], {"trainer.max_epochs": int(sys.argv[3]),
                                   "logging.progress": "none", "early_stopping.enabled": False})
start = time.perf_counter()
train_stage(params=params, schema_dir=sys.argv[2], run_dir=sys.argv[4])
seconds = time.perf_counter() - start
state = torch.load(sys.argv[4] + "/checkpoints/last.ckpt", weights_only=True)["state_dict"]
digest = hashlib.sha256()
for key in sorted(state):
    digest.update(state[key].numpy().tobytes())
from graphqa.numerics import mkl_branch
print(json.dumps({"seconds": seconds, "weights": digest.hexdigest()[:16],
                  "capability": torch.backends.cpu.get_cpu_capability(), "mkl": mkl_branch()}))
"""

MODES: dict[str, dict[str, str]] = {
    "pinned": {},
    "native": {"GRAPHQA_NATIVE_NUMERICS": "1"},
    "avx2-host": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-avx2": {"GRAPHQA_BENCH_MKL_CBWR": "AVX2"},
}


def _prepare(root: Path, params_file: Path) -> Path:
    """The default dataset, validated and packed (what the `schema` stage writes)."""
    from graphqa.config import load_params
    from graphqa.dataset import dataset_stage
    from graphqa.schema import schema_stage

    params = load_params(params_file)
    dataset_stage(cfg=params.dataset, out_dir=root / "dataset")
    labels = root / "dataset" / "labels"
    schema_stage(
        graph_dir=root / "dataset" / "graphs",
        label_files={s: str(labels / f"{s}.csv") for s in ("train", "val", "val_calib", "test")},
        out_dir=root / "schema",
    )
    return root / "schema"


def _train(mode: str, params_file: Path, schema: Path, epochs: int, out: Path) -> dict:
    # This process imported graphqa, so its environment carries the pin: start each child clean.
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != OPT_OUT}
    env.update(MODES[mode])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(params_file), str(schema), str(epochs), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    params_file = Path(args.params).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schema = _prepare(root, params_file)
        results: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode in MODES:
                out = root / f"{mode}-{repeat}"
                results[mode].append(_train(mode, params_file, schema, args.epochs, out))
    for mode, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        print(
            f"{mode:10s} capability {runs[0]['capability']:7s} MKL {runs[0]['mkl']!s:10s}"
            f" median {median:6.2f} s"
            f" over {len(runs)} runs  weights {sorted({r['weights'] for r in runs})}"
        )
    pinned = statistics.median(r["seconds"] for r in results["pinned"])
    native = statistics.median(r["seconds"] for r in results["native"])
    same = {r["weights"] for r in results["pinned"] + results["avx2-host"]}
    ratio = pinned / native
    print(f"time ratio pinned/native: {ratio:.3f} (cost {100 * (ratio - 1):+.1f}%)")
    print(f"pinned runs and the emulated AVX2 host agree bit for bit: {len(same) == 1}")
    before = statistics.median(r["seconds"] for r in results["mkl-avx2"])
    print(f"time ratio pinned/mkl-avx2 (the fix's cost): {pinned / before:.3f}")
    native_hashes = {r["weights"] for r in results["native"]}
    print(
        f"native runs agree with each other: {len(native_hashes) == 1}; "
        f"with pinned: {native_hashes == same}"
    )


if __name__ == "__main__":
    main()
