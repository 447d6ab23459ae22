"""The numeric path is pinned to AVX2 in every graphqa process, whatever the host supports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graphqa.numerics import OPT_OUT, PINNED_ENV, is_x86_64

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
