"""One numeric code path on every x86-64 machine, so the same inputs give the same bytes.

PyTorch, MKL, oneDNN, NumPy and OpenBLAS each pick kernels by the instruction set of the CPU
they run on (AVX2, AVX-512, AMX ...). Different kernels sum in different orders, so a model
trained on an AVX-512 machine differs in the last bits from one trained on an AVX2 machine,
and every hash in ``dvc.lock`` downstream of training changes with it. MKL additionally
adapts its thread count to the load of the machine unless told not to, which made two runs on
one busy machine differ (measured: ``benchmarks/numerics_cost.py``).

:func:`pin_cpu_numerics` caps every one of those libraries at AVX2 (the oldest instruction
set graphqa supports) and turns MKL's dynamic behaviour off. The libraries read these settings
once, when they are loaded, so this runs from ``graphqa/__init__.py`` before anything imports
torch or numpy; every stage script imports graphqa first. ``GRAPHQA_NATIVE_NUMERICS=1`` opts out
(faster on new CPUs, but results are then tied to the machine and recorded as such).
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import Any

OPT_OUT = "GRAPHQA_NATIVE_NUMERICS"
TARGET_CAPABILITY = "AVX2"

#: Environment read by the numeric libraries at load time -> the value that pins them.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels (ATen DispatchStub)
    "MKL_CBWR": "AVX2",  # MKL conditional numerical reproducibility: AVX2 code path
    "MKL_DYNAMIC": "FALSE",  # MKL must not change its thread count with the machine's load
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (mkldnn) kernels
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same for older oneDNN builds
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's AVX-512 dispatch
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy/SciPy's OpenBLAS: its AVX2 kernels
    "OPENBLAS_NUM_THREADS": "1",  # OpenBLAS splits sums by thread count
}
_LIBRARIES = ("torch", "numpy")


def is_x86_64() -> bool:
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


def numerics_report() -> dict[str, Any]:
    """What this process actually runs with; goes into run summaries and the bundle."""
    import torch

    return {
        "pinned": os.environ.get(OPT_OUT) != "1" and is_x86_64(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


def check_pinned() -> None:
    """Fail loudly if this process promised pinned numerics but torch ignored the pin."""
    report = numerics_report()
    if report["pinned"] and report["cpu_capability"] != TARGET_CAPABILITY:
        raise RuntimeError(
            f"numerics: expected PyTorch's CPU capability {TARGET_CAPABILITY} (pinned for "
            f"machine-independent results), got {report['cpu_capability']}: torch was "
            "imported before graphqa; import graphqa first or set "
            f"{OPT_OUT}=1 to accept machine-dependent results"
        )
