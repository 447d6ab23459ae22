"""Every stage script turns bad input into one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# Every stage that reads params.yaml (bundle reads only its input folders).
STAGES = sorted(p.name for p in (REPO / "stages").glob("*.py") if p.name != "bundle.py")


@pytest.mark.parametrize("script", STAGES)
def test_a_misspelt_param_is_one_line_naming_file_key_and_fix(script: str, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("optimizer:\n  learning_rat: 0.01\n")
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "stages" / script), "--params", str(params)]
    proc = subprocess.run(
        [*args, "--out", str(out), *_required(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    name = script.removesuffix(".py")
    assert lines[0].startswith(f"{name}: error: ")
    assert str(params) in lines[0] and "did you mean 'learning_rate'" in lines[0]
    assert not out.exists()  # nothing half-written


def _required(script: str) -> list[str]:
    """Every required argument but ``--params`` and ``--out`` (the params error comes first)."""
    missing = str(Path("no-such-input"))
    inputs = {
        "bundle.py": ["--model-dir", "--calibration-dir", "--trees-dir", "--scorer-dir"],
        "calibration.py": ["--model", "--schema-dir", "--scorer", "--trees-dir"],
        "cv.py": ["--schema-dir"],
        "evaluate.py": ["--bundle", "--schema-dir", "--scorer"],
        "final_model.py": ["--final-selection-dir", "--recommendation", "--retrain-root"],
        "final_selection.py": ["--selection-dir", "--phase1-dir", "--phase2-root", "--schema-dir"],
        "finetune.py": ["--selection-dir", "--schema-dir"],
        "flt.py": ["--schema-dir", "--model"],
        "flt_retrain.py": ["--flt-dir", "--selection-dir", "--schema-dir"],
        "flt_summary.py": ["--flt-dir", "--retrain-root", "--schema-dir"],
        "scorer.py": ["--model-dir", "--trees-dir", "--cv-root", "--schema-dir"],
        "selection.py": ["--train-root"],
        "train.py": ["--schema-dir"],
        "trees.py": ["--schema-dir"],
    }.get(script, [])
    numbers = {
        "train.py": ["--seed", "0"],
        "cv.py": ["--fold", "0"],
        "finetune.py": ["--phase", "1"],
        "flt_retrain.py": ["--keep", "1.0", "--seed", "0"],
    }.get(script, [])
    return [*numbers, *(arg for flag in inputs for arg in (flag, missing))]
