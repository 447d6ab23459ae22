"""The code's layout keeps the promises the README's Layout table makes.

- One name per stage: stage ``X`` -> ``stages/X.py`` -> ``graphqa/X.py`` whose worker is
  ``X_stage`` -> output folder ``runs/X`` (or ``data/X``) -> params section ``X:`` (or the
  documented reason why not).
- The maths (``graphqa/maths/``) reads and writes no files, so it can be tested on arrays.
- No helper is defined twice in ``src/``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SRC = REPO / "src" / "graphqa"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
#: Stages without a params section of their own name, and the sections they read instead.
OTHER_PARAMS = {
    "train": "the training recipe: model, trainer, optimizer, scheduler, loss, dataloader ...",
    "final_selection": "selection (the rule that picked the sweep winner)",
    "flt_retrain": "flt (retrain_overrides, seeds)",
    "flt_summary": "flt (tolerances, seeds)",
    "final_model": "flt.adopt",
    "scorer": "model.family",
    "bundle": "none: it copies what earlier stages chose",
}
#: dvc.yaml stages that are phases of one stage (same script, worker and params section).
PHASES = {"finetune_phase1": "finetune", "finetune_phase2": "finetune"}
#: Modules allowed in graphqa.maths outside ``if TYPE_CHECKING:`` (no file I/O among them).
MATHS_IMPORTS = {
    "__future__", "math", "re", "warnings", "dataclasses", "typing", "collections", "numpy",
    "scipy", "sklearn", "torch", "torchmetrics", "pandas", "graphqa",
}  # fmt: skip
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "to_csv",
              "read_csv", "load", "save", "mkdir", "unlink"}  # fmt: skip


def stage_names() -> list[str]:
    return sorted({PHASES.get(name, name) for name in DVC})


def outputs(name: str) -> list[str]:
    stages = [s for n, s in DVC.items() if PHASES.get(n, n) == name]
    found = []
    for stage in stages:
        for key in ("outs", "metrics", "plots"):
            for out in stage.get(key, []):
                found.append(next(iter(out)) if isinstance(out, dict) else out)
    return found


@pytest.mark.parametrize("name", stage_names())
def test_a_stage_has_one_name_from_script_to_output_folder(name: str) -> None:
    script = REPO / "stages" / f"{name}.py"
    worker_module = SRC / f"{name}.py"
    assert script.is_file() and worker_module.is_file()
    assert any(f"python stages/{name}.py" in s["cmd"] for n, s in DVC.items() if n.startswith(name))
    workers = {
        n.name for n in ast.parse(worker_module.read_text()).body if isinstance(n, ast.FunctionDef)
    }
    assert f"{name}_stage" in workers, f"graphqa/{name}.py has no worker {name}_stage"
    assert re.search(rf"from graphqa\.{name} import .*\b{name}_stage\b", script.read_text())
    folders = {Path(out).parts[1] for out in outputs(name)}
    assert folders and all(f.startswith(name) for f in folders), (name, folders)
    assert name in PARAMS or name in OTHER_PARAMS, f"stage {name}: no params section {name}:"


def test_the_maths_package_reads_and_writes_no_files() -> None:
    modules = sorted((SRC / "maths").glob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        tree = ast.parse(path.read_text())
        type_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    assert name.split(".")[0] in MATHS_IMPORTS, f"{path.name} imports {name}"
                    if name.startswith("graphqa"):
                        assert name.startswith("graphqa.maths"), f"{path.name} imports {name}"
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                assert called not in FILE_CALLS, f"{path.name}:{node.lineno} calls {called}()"


def test_no_helper_is_defined_twice_in_src() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                where[node.name].append(str(path.relative_to(SRC)))
    assert len(where) > 100
    twice = {name: files for name, files in where.items() if len(files) > 1}
    assert not twice, f"defined in more than one module: {twice}"
