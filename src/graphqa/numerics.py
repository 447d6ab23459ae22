"""One numeric code path on every x86-64 machine, so the same inputs give the same bytes.

PyTorch, MKL, oneDNN, NumPy and OpenBLAS each pick kernels by the instruction set of the CPU
they run on (AVX2, AVX-512, AMX ...). Different kernels sum in different orders, so a model
trained on an AVX-512 machine differs in the last bits from one trained on an AVX2 machine,
and every hash in ``dvc.lock`` downstream of training changes with it. MKL additionally
adapts its thread count to the load of the machine unless told not to, which made two runs on
one busy machine differ (measured: ``benchmarks/numerics_cost.py``).

MKL also picks kernels by CPU *vendor*. Its AVX2 reproducibility branch (``MKL_CBWR=AVX2``)
exists on Intel CPUs only: on an AMD CPU MKL silently falls back to ``AUTO``, i.e. no
reproducibility mode at all and AMD-specific GEMM kernels, so a lock written on an Intel host
was not reproduced on an AMD one (issue 20: ``train@1-base`` stopped at another epoch). The one
branch MKL honours, with identical results, on both vendors is ``COMPATIBLE``; graphqa pins it and
:func:`check_pinned` reads back the branch MKL actually runs (``mkl_serv_cbwr_get``) instead of
trusting the environment.

:func:`pin_cpu_numerics` caps every one of those libraries at AVX2 (the oldest instruction
set graphqa supports), puts MKL on its vendor-independent branch and turns MKL's and OpenMP's
dynamic thread counts off. The libraries read these settings once, when they are loaded, so
this runs from ``graphqa/__init__.py`` before anything imports torch or numpy; every stage
script imports graphqa first. ``GRAPHQA_NATIVE_NUMERICS=1`` opts out (faster on new CPUs, but
results are then tied to the machine and recorded as such).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

OPT_OUT = "GRAPHQA_NATIVE_NUMERICS"
TARGET_CAPABILITY = "AVX2"

#: Environment read by the numeric libraries at load time -> the value that pins them.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels (ATen DispatchStub)
    # MKL conditional numerical reproducibility: the branch both Intel and AMD CPUs run (AVX2
    # is Intel-only: MKL ignores it on AMD and runs unpinned AMD kernels).
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",  # MKL must not change its thread count with the machine's load
    "OMP_DYNAMIC": "FALSE",  # nor OpenMP (one of MKL's stated reproducibility conditions)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (mkldnn) kernels
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same for older oneDNN builds
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's AVX-512 dispatch
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy/SciPy's OpenBLAS: its AVX2 kernels
    "OPENBLAS_NUM_THREADS": "1",  # OpenBLAS splits sums by thread count
}
_LIBRARIES = ("torch", "numpy")
#: ``mkl_cbwr.h`` branch codes -> names, as ``mkl_cbwr_get(MKL_CBWR_ALL)`` returns them.
MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 10: "AVX2"}
MKL_CBWR_ALL = -1
MKL_STRICT_BIT = 0x10000


def is_x86_64() -> bool:
    """Whether this machine is x86-64, the only architecture the numeric pin applies to.

    Returns:
        True on ``x86_64``/``amd64``.
    """
    return platform.machine().lower() in {"x86_64", "amd64"}


def pin_cpu_numerics() -> bool:
    """Set :data:`PINNED_ENV` in this process (and so in every child it starts).

    Returns whether the pin applies. Values a user already set are overridden on purpose:
    a stray ``ATEN_CPU_CAPABILITY=avx512`` in a shell profile must not change the results.
    """
    if os.environ.get(OPT_OUT) == "1" or not is_x86_64():
        return False
    loaded = [name for name in _LIBRARIES if name in sys.modules]
    if loaded and any(os.environ.get(k) != v for k, v in PINNED_ENV.items()):
        warnings.warn(
            f"graphqa was imported after {', '.join(loaded)}: the CPU numeric path may not be "
            "pinned in this process; import graphqa first for machine-independent results",
            stacklevel=3,
        )
    os.environ.update(PINNED_ENV)
    return True


def mkl_branch() -> str | None:
    """The reproducibility branch MKL runs in this process (``COMPATIBLE``, ``AUTO`` ...).

    Read from MKL itself, not from ``MKL_CBWR``: MKL drops a branch the CPU's vendor does not
    support without a word. None where torch is not built with MKL (or hides the symbol).
    """
    import torch

    if not torch.backends.mkl.is_available():
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        cbwr_get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    cbwr_get.argtypes, cbwr_get.restype = [ctypes.c_int], ctypes.c_int
    code = cbwr_get(MKL_CBWR_ALL)
    name = MKL_BRANCHES.get(code & ~MKL_STRICT_BIT, str(code & ~MKL_STRICT_BIT))
    return f"{name},STRICT" if code & MKL_STRICT_BIT else name


def numerics_report() -> dict[str, Any]:
    """What this process actually runs with; goes into run summaries and the bundle."""
    import torch

    return {
        "pinned": os.environ.get(OPT_OUT) != "1" and is_x86_64(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_branch": mkl_branch(),
        "torch": torch.__version__,
    }


def check_pinned() -> None:
    """Fail loudly if this process promised pinned numerics but a library ignored the pin.

    Raises:
        RuntimeError: torch runs other kernels than AVX2 (it was imported before graphqa), or
            MKL runs another reproducibility branch than ``MKL_CBWR`` asked for.
    """
    report = numerics_report()
    if not report["pinned"]:
        return
    if report["cpu_capability"] != TARGET_CAPABILITY:
        raise RuntimeError(
            f"numerics: expected PyTorch's CPU capability {TARGET_CAPABILITY} (pinned for "
            f"machine-independent results), got {report['cpu_capability']}: torch was "
            "imported before graphqa; import graphqa first or set "
            f"{OPT_OUT}=1 to accept machine-dependent results"
        )
    wanted = PINNED_ENV["MKL_CBWR"]
    if report["mkl_branch"] not in (None, wanted):
        raise RuntimeError(
            f"numerics: expected MKL's reproducibility branch {wanted} (MKL_CBWR, pinned for "
            f"machine-independent results), MKL runs {report['mkl_branch']}: MKL was loaded "
            f"before graphqa or does not support {wanted} on this CPU; set {OPT_OUT}=1 to "
            "accept machine-dependent results"
        )
