"""The numeric path is pinned to AVX2 in every graphqa process, whatever the host supports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphqa.numerics import OPT_OUT, PINNED_ENV, is_x86_64

from .conftest import REPO
from .vendor import build_vendor_shim, host_is_intel, vendor_env

pytestmark = pytest.mark.skipif(not is_x86_64(), reason="the AVX2 pin is for x86-64 hosts")

PROBE = """
import json, os, sys
import graphqa  # first, as every stage script does
import numpy, torch
features = numpy._core._multiarray_umath.__cpu_features__
print(json.dumps({
    "torch": torch.backends.cpu.get_cpu_capability(),
    # numpy 2.x dispatch targets above AVX2 (hardware flags like AVX512F stay visible)
    "numpy_avx512": any(features.get(k) for k in ("X86_V4", "AVX512_ICL", "AVX512_SPR")),
    "env": {k: os.environ.get(k) for k in sys.argv[1:]},
}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != OPT_OUT}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *sorted(PINNED_ENV)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _host_capability() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env={k: v for k, v in os.environ.items() if k not in PINNED_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_graphqa_process_runs_torch_and_numpy_on_avx2_even_when_told_otherwise() -> None:
    # A stray setting in the user's shell must not change the numbers.
    probe = _probe(ATEN_CPU_CAPABILITY="avx512", MKL_CBWR="AUTO")
    assert probe["torch"] == "AVX2"
    assert probe["numpy_avx512"] is False
    assert probe["env"] == PINNED_ENV


def test_opting_out_gives_the_hosts_own_kernels() -> None:
    probe = _probe(**{OPT_OUT: "1"})
    assert probe["torch"] == _host_capability()
    assert probe["env"]["MKL_CBWR"] is None


def test_torch_imported_before_graphqa_is_refused_rather_than_silently_unpinned() -> None:
    if _host_capability() == "AVX2":
        pytest.skip("this host runs AVX2 anyway: importing torch first changes nothing")
    code = (
        "import torch; torch.backends.cpu.get_cpu_capability(); import torch.nn\n"
        "from graphqa.numerics import check_pinned; check_pinned()"
    )
    clean = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != OPT_OUT}
    proc = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "import graphqa first" in proc.stderr


# --- The vendor-independent MKL branch (issue 20) ---------------------------------------------

BRANCH_PROBE = """
import os, sys
import graphqa
if len(sys.argv) > 1:  # another branch than the pin's, set before MKL loads
    os.environ["MKL_CBWR"] = sys.argv[1]
import torch
torch.ones(8, 8) @ torch.ones(8, 8)
from graphqa.numerics import mkl_branch
print(mkl_branch())
"""

TRAIN_CHILD = """
import hashlib, json, sys
import graphqa
import torch
from graphqa.config import parse_params
from graphqa.numerics import mkl_branch
from graphqa.train import train_stage
from tests.conftest import TINY_OVERRIDES
train_stage(params=parse_params({}, TINY_OVERRIDES), schema_dir=sys.argv[1], run_dir=sys.argv[2])
state = torch.load(sys.argv[2] + "/checkpoints/last.ckpt", weights_only=True)["state_dict"]
digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state)))
print(json.dumps({"mkl": mkl_branch(), "weights": digest.hexdigest()}))
"""


@pytest.fixture(scope="module")
def vendor_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shim = build_vendor_shim(tmp_path_factory.mktemp("shim"))
    if shim is None:
        pytest.skip("no C compiler to build the MKL vendor shim (tests/mkl_vendor.c)")
    return shim


def _branch(shim: Path, intel: bool, *branch: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", BRANCH_PROBE, *branch],
        env={**os.environ, **vendor_env(shim, intel)},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def test_mkl_runs_the_pinned_branch_on_either_vendor_where_avx2_was_intel_only(
    vendor_shim: Path,
) -> None:
    # The cause of issue 20, as MKL itself reports it: the old pin (AVX2) holds on Intel only;
    # elsewhere MKL falls back to AUTO (no reproducibility mode, the vendor's own kernels).
    assert _branch(vendor_shim, True, "AVX2") == "AVX2"
    assert _branch(vendor_shim, False, "AVX2") == "AUTO"
    # The pin: the one branch both vendors run.
    assert _branch(vendor_shim, True) == _branch(vendor_shim, False) == "COMPATIBLE"


def test_a_wrong_mkl_branch_is_refused_not_silently_run() -> None:
    code = (
        "import os; import graphqa; os.environ['MKL_CBWR'] = 'AUTO'\n"
        "import torch; from graphqa.numerics import check_pinned; check_pinned()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "expected MKL's reproducibility branch COMPATIBLE" in proc.stderr
    assert "MKL runs AUTO" in proc.stderr


def test_training_gives_the_same_bytes_on_the_other_vendor_and_another_memory_layout(
    vendor_shim: Path, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    # Two fresh processes: this machine as it is, and MKL told the CPU is of the other vendor,
    # with address randomisation off and a padded environment (another memory layout).
    other = {**vendor_env(vendor_shim, not host_is_intel()), "GRAPHQA_PAD": "x" * 40_000}
    setarch = ["setarch", "x86_64", "-R"] if shutil.which("setarch") else []
    results = []
    for name, prefix, extra in (("here", [], {}), ("other", setarch, other)):
        proc = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-c",
                TRAIN_CHILD,
                str(tiny_schema_dir),
                str(tmp_path / name),
            ],
            env={**os.environ, "DVCLIVE_OPEN": "false", **extra},
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert results[0]["mkl"] == results[1]["mkl"] == "COMPATIBLE"
    assert results[0]["weights"] == results[1]["weights"]
    here, there = (tmp_path / n / "metrics.csv" for n in ("here", "other"))
    assert here.read_bytes() == there.read_bytes()
