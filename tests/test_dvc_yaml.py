"""dvc.yaml hygiene: every stage depends on all the graphqa code it runs (so editing a module
reruns its users) and the repo's DVC config keeps analytics and update checks off."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SRC = REPO / "src" / "graphqa"


def module_file(dotted: str) -> Path | None:
    """``graphqa.maths.metrics`` -> ``src/graphqa/maths/metrics.py`` (a package: its
    ``__init__.py``); ``None`` for names that are not graphqa modules (functions, classes)."""
    parts = dotted.split(".")[1:]
    if not parts:
        return SRC / "__init__.py"
    path = SRC.joinpath(*parts)
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def graphqa_imports(path: Path) -> set[Path]:
    """graphqa source files a file imports (at any depth, function-level imports included),
    with the ``__init__.py`` of every package on the way (Python runs them first)."""
    dotted: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphqa"):
            dotted.add(node.module)
            dotted |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            dotted |= {a.name for a in node.names if a.name.startswith("graphqa.")}
    files = set()
    for name in dotted:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            found = module_file(".".join(parts[:depth]))
            if found is not None:
                files.add(found)
    return files


#: Source files a module reads besides Python: the fused kernel's C++ is compiled on import.
NON_PYTHON_READS = {"src/graphqa/attention.py": ["src/graphqa/csrc/gatv2_attention.cpp"]}


def code_closure(script: Path) -> set[str]:
    """``src/graphqa/**.py`` paths a stage script can execute, transitively (importing any
    graphqa module runs the package's ``__init__`` first), and the non-Python sources they
    compile (:data:`NON_PYTHON_READS`)."""
    todo, seen = [*graphqa_imports(script), SRC / "__init__.py"], set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graphqa_imports(module)
    closure = {str(m.relative_to(REPO)) for m in seen}
    return closure | {read for module in closure for read in NON_PYTHON_READS.get(module, [])}


def stages() -> list[tuple[str, dict]]:
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items())


@pytest.mark.parametrize(("name", "stage"), stages(), ids=[n for n, _ in stages()])
def test_stage_depends_on_all_code_it_runs(name: str, stage: dict) -> None:
    script = re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)
    deps = set(stage["deps"])
    assert script in deps
    missing = code_closure(REPO / script) - deps
    assert not missing, f"stage {name} runs but does not depend on {sorted(missing)}"


def test_dvc_config_keeps_analytics_and_update_checks_off() -> None:
    config = (REPO / ".dvc" / "config").read_text()
    assert re.search(r"analytics\s*=\s*false", config)
    assert re.search(r"check_update\s*=\s*false", config)


def test_sweep_overlay_plots_list_every_sweep_member() -> None:
    """DVC cannot derive a plot's file list from params: the overlay must be kept in step."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    members = {
        f"runs/train/{seed}-{variant}/metrics.csv"
        for seed in params["sweep"]["seeds"]
        for variant in params["sweep"]["variants"]
    }
    plots = {
        name: spec
        for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
        for name, spec in entry.items()
    }
    for name in ("sweep_val_loss", "sweep_val_spearman"):
        assert set(plots[name]["y"]) == members, name


def test_a_runs_summary_records_only_params_its_stage_declares() -> None:
    """summary.json is a cached output of the training stages: every param it records must be
    one DVC tracks for them, or a fresh clone would not reproduce the committed dvc.lock."""
    from graphqa.config import Params
    from graphqa.train import recorded_params

    declared = set(dict(stages())["train"]["params"])
    for section, values in recorded_params(Params()).items():
        for key in values:
            dotted = f"{section}.{key}"
            assert section in declared or dotted in declared or dotted == "dataloader.seed", dotted


def test_every_model_param_a_run_records_is_declared_and_family_is_not() -> None:
    """The training stage lists model keys one by one: a new network key must be declared (or
    changing it would not retrain), while ``model.family`` (which scorer ships, chosen after
    training) must not be (or changing it would retrain everything)."""
    from graphqa.config import ModelConfig
    from graphqa.train import UNRECORDED_MODEL_KEYS

    declared = set(dict(stages())["train"]["params"])
    assert "model" not in declared
    for key in ModelConfig.model_fields:
        assert (f"model.{key}" in declared) == (key not in UNRECORDED_MODEL_KEYS), key
    assert "model.family" in set(dict(stages())["scorer"]["params"])
