"""`dvc repro` end to end in a temporary git copy of the repo, on the tiny params profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphqa.config import apply_overrides

from .conftest import REPO, TINY_OVERRIDES

pytestmark = pytest.mark.e2e

COPIED = ["dvc.yaml", "params.yaml", "stages", "src", ".dvc/config", ".dvcignore", ".gitignore"]


def _env(tmp: Path) -> dict[str, str]:
    """Isolated HOME, DVC config/site-cache dirs and git identity; the copy's code first."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "graphqa-test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "graphqa-test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(tmp / "repo" / "src"),
        }
    )
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _write_params(repo: Path, extra: dict[str, object] | None = None) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = apply_overrides(raw, {**TINY_OVERRIDES, "trainer.max_epochs": 1, **(extra or {})})
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("e2e")
    repo = tmp / "repo"
    for name in COPIED:
        src = REPO / name
        if not src.exists():
            continue
        dest = repo / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest)
    _write_params(repo)
    env = _env(tmp)
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "copy"], repo, env)
    return repo, env


ALL_STAGES = (
    "dataset",
    "schema",
    "train@0-base",
    "selection",
    "finetune_phase1",
    "finetune_phase2@101",
    "final_selection",
    "flt",
    "flt_retrain@1.0",
    "flt_retrain@0.5",
    "flt_summary",
    "calibration",
    "bundle",
    "evaluate",
)


def _ran(output: str) -> set[str]:
    return {s for s in (*ALL_STAGES, "train@1-base") if f"Running stage '{s}'" in output}


def test_repro_runs_then_caches_then_reruns_only_what_changed(
    repo_copy: tuple[Path, dict[str, str]],
) -> None:
    repo, env = repo_copy
    dvc = [sys.executable, "-m", "dvc"]
    first = _run([*dvc, "repro"], repo, env)
    assert _ran(first) == set(ALL_STAGES)
    assert json.loads((repo / "runs/train/0-base/metrics.json").read_text())["epochs_trained"] == 1
    assert (repo / "runs/train/0-base/checkpoints/best.ckpt").exists()
    final = json.loads((repo / "runs/final_selection/selection.json").read_text())
    assert final["winner"] in {"train/0-base", "finetune_phase1", "finetune_phase2/101"}
    assert (repo / "runs/bundle/bundle.json").exists()
    recommendation = json.loads((repo / "runs/flt_summary/recommendation.json").read_text())
    assert recommendation["keep_fraction"] in (1.0, 0.5)
    shown = json.loads(_run([*dvc, "metrics", "show", "--json"], repo, env))
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    assert files == {
        "runs/selection/metrics.json",
        "runs/final_selection/metrics.json",
        "runs/flt_summary/metrics.json",
        "runs/calibration/metrics.json",
        "runs/evaluate/metrics.json",
    }
    lock = (repo / "dvc.lock").read_text()
    assert str(repo) not in lock and str(repo) not in (repo / "runs/bundle/params.json").read_text()

    second = _run([*dvc, "repro"], repo, env)
    assert _ran(second) == set()
    assert "Data and pipelines are up to date" in second

    # A calibration param reruns only calibration and what consumes it.
    _write_params(repo, {"calibration.coverage": 0.8})
    assert _ran(_run([*dvc, "repro"], repo, env)) == {"calibration", "bundle", "evaluate"}

    # A dataset param reruns the generator and the schema check, and leaves every stage
    # below them out of date.
    _write_params(repo, {"calibration.coverage": 0.8, "dataset.label_noise": 0.05})
    assert _ran(_run([*dvc, "repro", "schema"], repo, env)) == {"dataset", "schema"}
    status = _run([*dvc, "status"], repo, env)
    assert "train@0-base" in status and "modified:           data/schema/packed" in status

    # Back to the old data plus a new seed: the old member's inputs are as locked again, so
    # only the new sweep member trains (the data stages may be redone or restored).
    _write_params(repo, {"calibration.coverage": 0.8, "sweep.seeds": [0, 1]})
    ran = _ran(_run([*dvc, "repro", "selection"], repo, env))
    assert (
        {"train@1-base", "selection"} <= ran <= {"dataset", "schema", "train@1-base", "selection"}
    )
    assert _run(["git", "for-each-ref", "refs/exps"], repo, env).strip() == ""


def test_failed_schema_check_keeps_last_good_lock(repo_copy: tuple[Path, dict[str, str]]) -> None:
    repo, env = repo_copy
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "repro", "--single-item", "schema"], repo, env)
    lock_before = (repo / "dvc.lock").read_text()
    labels = repo / "data/dataset/labels/train.csv"
    labels.chmod(0o644)
    text = labels.read_text()
    first_row = text.splitlines()[1]
    labels.write_text(text + first_row + "\n")  # duplicate MODEL
    proc = subprocess.run(
        [*dvc, "repro", "--single-item", "schema"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "train.csv" in proc.stderr + proc.stdout and "MODEL" in proc.stderr + proc.stdout
    assert (repo / "dvc.lock").read_text() == lock_before
