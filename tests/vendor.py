"""Run a process as if on the other CPU vendor, as far as MKL can tell (issue 20).

MKL picks its kernels, and whether it honours a reproducibility branch at all, by CPU vendor.
``tests/mkl_vendor.c``, compiled here and preloaded, makes MKL believe the CPU is (or is not)
an Intel one, so one machine can check what a machine of the other vendor computes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("mkl_vendor.c")


def build_vendor_shim(out_dir: Path) -> Path | None:
    """Compile the shim into ``out_dir``; None when no C compiler is installed."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    lib = out_dir / "libmkl_vendor.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE)], check=True)
    return lib


def host_is_intel() -> bool:
    """Whether this machine's CPU is an Intel one (``/proc/cpuinfo`` vendor_id)."""
    return "GenuineIntel" in Path("/proc/cpuinfo").read_text()


def vendor_env(shim: Path, intel: bool) -> dict[str, str]:
    """Environment entries that make MKL see an Intel (``intel=True``) or another CPU."""
    return {"LD_PRELOAD": str(shim), "GRAPHQA_MKL_INTEL": "1" if intel else "0"}
