"""`dvc repro` end to end in a temporary git copy of the repo, on the tiny params profile.

The tests in this module share one copy and run in file order: the first reproduces the whole
pipeline (auditing every file each stage opens) and commits the result as the baseline the
later ones change, restore from the run-cache, queue experiments against and diff with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from graphqa.config import apply_overrides

from .conftest import REPO, SHARED, TINY_OVERRIDES

pytestmark = pytest.mark.e2e

COPIED = [
    "dvc.yaml",
    "params.yaml",
    "stages",
    "src",
    "masks",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
]
AUDIT = Path(__file__).parent / "audit"


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
            "PYTHONPATH": f"{tmp / 'repo' / 'src'}{os.pathsep}{AUDIT}",
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
    "trees",
    "cv@0",
    "cv@1",
    "cv@2",
    "train@0-base",
    "selection",
    "finetune_phase1",
    "finetune_phase2@101",
    "final_selection",
    "flt",
    "flt_retrain@1.0-0",
    "flt_retrain@0.5-0",
    "flt_summary",
    "final_model",
    "scorer",
    "calibration",
    "bundle",
    "evaluate",
)
TRAINING = {"train@0-base", "finetune_phase1", "finetune_phase2@101", "flt_retrain@1.0-0",
            "flt_retrain@0.5-0", "cv@0", "cv@1", "cv@2"}  # fmt: skip
DVC = [sys.executable, "-m", "dvc"]


def _ran(output: str) -> set[str]:
    return {s for s in (*ALL_STAGES, "train@1-base") if f"Running stage '{s}'" in output}


def _restored(output: str) -> set[str]:
    return {s for s in ALL_STAGES if f"Stage '{s}' is cached - skipping run" in output}


@pytest.fixture(scope="module")
def baseline(repo_copy: tuple[Path, dict[str, str]]) -> tuple[Path, dict[str, str], str, Path]:
    """The whole pipeline reproduced once with every stage's file accesses audited, then
    committed as the baseline (dvc.lock + git-tracked metrics), as a user's repo would be."""
    repo, env = repo_copy
    audit = repo.parent / "audit"
    audit.mkdir()
    output = _run([*DVC, "repro"], repo, {**env, "GRAPHQA_AUDIT_DIR": str(audit)})
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    return repo, env, output, audit


def test_repro_runs_every_stage_then_nothing(baseline: tuple[Path, dict, str, Path]) -> None:
    repo, env, first, _ = baseline
    assert _ran(first) == set(ALL_STAGES)
    assert json.loads((repo / "runs/train/0-base/metrics.json").read_text())["epochs_trained"] == 1
    assert (repo / "runs/train/0-base/checkpoints/best.ckpt").exists()
    summary = json.loads((repo / "runs/train/0-base/summary.json").read_text())
    # The stage process ran on the pinned numeric path, whatever this host supports.
    assert summary["provenance"]["numerics"]["cpu_capability"] == "AVX2"
    final = json.loads((repo / "runs/final_selection/selection.json").read_text())
    assert final["winner"] in {"train/0-base", "finetune_phase1", "finetune_phase2/101"}
    card = json.loads((repo / "runs/final_model/model.json").read_text())
    assert card["model"] == final["winner"]  # flt.adopt is false by default
    assert (repo / "runs/bundle/bundle.json").exists()
    recommendation = json.loads((repo / "runs/flt_summary/recommendation.json").read_text())
    assert recommendation["keep_fraction"] in (1.0, 0.5)
    shown = json.loads(_run([*DVC, "metrics", "show", "--json"], repo, env))
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    assert files == {
        "runs/trees/metrics.json",
        "runs/cv/0/metrics.json",
        "runs/cv/1/metrics.json",
        "runs/cv/2/metrics.json",
        "runs/selection/metrics.json",
        "runs/final_selection/metrics.json",
        "runs/flt_summary/metrics.json",
        "runs/scorer/metrics.json",
        "runs/calibration/metrics.json",
        "runs/evaluate/metrics.json",
    }
    lock = (repo / "dvc.lock").read_text()
    assert str(repo) not in lock and str(repo) not in (repo / "runs/bundle/params.json").read_text()
    assert "dvc.lock" not in (repo / "runs/bundle/provenance.json").read_text()

    second = _run([*DVC, "repro"], repo, env)
    assert _ran(second) == set()
    assert "Data and pipelines are up to date" in second


def _declared(lock: dict, stage: str) -> set[str]:
    entry = lock["stages"][stage]
    paths = [d["path"] for d in entry.get("deps", [])] + [o["path"] for o in entry.get("outs", [])]
    return {os.path.normpath(p) for p in paths}  # DVC keeps `graphs/../summary.json` as written


def _undeclared(repo: Path, record: dict, declared: set[str]) -> list[str]:
    """Files in the repo a stage process touched that are neither declared nor inside a
    declared folder. ``atomic_dir`` writes ``.<name>.tmp-*`` / ``.<name>.old-*`` siblings of a
    declared output; they count as that output. Repository metadata is not data: DVCLive opens
    the DVC repo (its root, ``.gitignore``, ``.dvcignore``, ``.git/``, ``.dvc/``) to learn
    whether it runs inside a pipeline."""
    bad = []
    for kind, path in record["files"]:
        rel = os.path.relpath(path, repo)
        top = rel.split(os.sep)[0]
        if rel.startswith("..") or "__pycache__" in rel or top in {".git", ".dvc"}:
            continue
        parts = [re.sub(r"^\.(.+)\.(tmp|old)-[^/]*$", r"\1", p) for p in Path(rel).parts]
        rel = "/".join(parts) or "."
        if rel in {".", "params.yaml", ".gitignore", ".dvcignore"} or any(
            rel == d or rel.startswith(d.rstrip("/") + "/") for d in declared
        ):
            continue
        if kind == "list" and any(d.startswith(rel + "/") for d in declared):
            continue  # listing a parent folder on the way to a declared path
        bad.append(f"{kind} {rel}")
    return sorted(set(bad))


def test_every_stage_reads_and_writes_only_what_it_declares(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    repo, _, _, audit = baseline
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    by_cmd = {" ".join(e["cmd"].split()): name for name, e in lock["stages"].items()}
    records = [json.loads(p.read_text()) for p in audit.glob("*.json")]
    seen: dict[str, list[str]] = {}
    for record in records:
        stage = by_cmd[" ".join(["python", *record["argv"]])]
        seen[stage] = _undeclared(repo, record, _declared(lock, stage))
        assert any(f.endswith(f"/{record['argv'][0]}") for _, f in record["files"])  # audited
    assert set(seen) == set(ALL_STAGES)
    assert {stage: files for stage, files in seen.items() if files} == {}


def test_every_stage_is_restored_from_the_run_cache(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    """With no dvc.lock and no outputs, ``dvc repro`` finds every stage in the run-cache:
    nothing runs and the same lock comes back (as after a round trip of a param)."""
    repo, env, _, _ = baseline
    _write_params(repo, {"optimizer.learning_rate": 0.002})
    try:
        status = _run([*DVC, "status"], repo, env)
    finally:
        _write_params(repo)
    # the recipe's own param: the sweep and the cv folds would retrain (fine-tunes and FLT
    # retrains take their optimizer from finetune.* and the winner's recipe)
    assert all(f"{stage}:" in status for stage in ("train@0-base", "cv@0", "cv@1", "cv@2"))
    (repo / "dvc.lock").unlink()
    _run(["git", "clean", "-q", "-f", "-d", "-X", "runs", "data"], repo, env)  # DVC outputs
    assert not (repo / "runs/train/0-base/checkpoints").exists()
    back = _run([*DVC, "repro"], repo, env)
    assert _ran(back) == set()
    assert _restored(back) == set(ALL_STAGES)
    assert _run(["git", "status", "--porcelain"], repo, env).strip() == ""


def test_queued_experiments_run_two_at_a_time_and_diff_against_the_baseline(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    repo, env, _, _ = baseline
    for name, change in (("cov50", "calibration.coverage=0.5"), ("adopt", "flt.adopt=true")):
        _run([*DVC, "exp", "run", "--queue", "-n", name, "-S", change], repo, env)
    # Not through _run's pipes: DVC's queue daemon inherits the starter's stdout, and a worker
    # that lingers after its last task (dvc-task's monitor, seen here once) kept the pipe open,
    # so reading it waited out the timeout although both experiments had succeeded.
    with open(repo / ".dvc" / "tmp" / "queue_start.log", "w") as log:
        subprocess.run(
            [*DVC, "queue", "start", "-j", "2"],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        status = _run([*DVC, "queue", "status"], repo, env)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert "Success" in status and "Failed" not in status, status
    shown = json.loads(_run([*DVC, "exp", "show", "--json"], repo, env))
    names = {
        exp["name"]
        for rev in shown
        for exp_list in (rev.get("experiments") or [])
        for exp in exp_list.get("revs", [])
        if exp.get("name")
    }
    assert {"cov50", "adopt"} <= names
    diff = json.loads(_run([*DVC, "metrics", "diff", "HEAD", "cov50", "--json"], repo, env))
    # The interval (and what it guarantees) moved with the coverage; nothing upstream did.
    assert set(diff) <= {"runs/calibration/metrics.json", "runs/evaluate/metrics.json"}
    assert "50%" in diff["runs/calibration/metrics.json"]["interval_guarantee"]["new"]
    # The workspace and the baseline were left alone.
    assert _run(["git", "status", "--porcelain"], repo, env).strip() == ""


def test_adopting_the_flt_recommendation_ships_the_pruned_retrain(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    repo, env, _, _ = baseline
    _write_params(repo, {"flt.adopt": True})
    out = _run([*DVC, "repro"], repo, env)
    # The queued "adopt" experiment already ran these stages: they come from the run-cache.
    assert "final_model" in _ran(out) | _restored(out) and not _ran(out) & TRAINING
    recommendation = json.loads((repo / "runs/flt_summary/recommendation.json").read_text())
    keep, run = recommendation["keep_fraction"], recommendation["run"]
    card = json.loads((repo / "runs/final_model/model.json").read_text())
    assert card["model"] == f"flt_retrain/{run}" and run.startswith(f"{float(keep)}-")
    assert (repo / "runs/final_model/model.ckpt").read_bytes() == (
        repo / f"runs/flt_retrain/{run}/checkpoints/best.ckpt"
    ).read_bytes()
    assert (repo / "runs/bundle/feature_mask.json").exists() == (keep < 1.0)
    _write_params(repo)
    _run([*DVC, "repro"], repo, env)


def test_every_family_is_evaluated_and_the_shipped_one_is_not_worse(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    """The evaluation table lists GNN, trees, blend and random pick with intervals, every
    candidate's val, out-of-fold and test ranking loss side by side, and the shipped scorer is
    the best out of fold and not worse than the best single family on test beyond the noise."""
    import pandas as pd

    repo, env, _, _ = baseline
    scorer = json.loads((repo / "runs/scorer/scorer.json").read_text())
    assert scorer["family"] in {"gnn", "trees", "blend"} and scorer["reason"]
    others = {"gnn", "trees", "blend"} - {scorer["family"]}
    assert {v["candidate"] for v in scorer["evidence"]} == others
    oof = {name: c["oof_ranking_loss"] for name, c in scorer["candidates"].items()}
    assert oof[scorer["family"]] == min(oof.values())  # auto: the best out of fold ships
    candidates = pd.read_csv(repo / "runs/evaluate/candidates.csv").set_index("family")
    assert set(candidates.index) == {"gnn", "trees", "blend"}
    assert candidates.loc[scorer["family"], "shipped"]
    for name, row in candidates.iterrows():
        assert row["oof_ranking_loss"] == pytest.approx(oof[name], abs=1e-6)
    summary = pd.read_csv(repo / "runs/evaluate/summary.csv").set_index(["ranker", "metric"])
    for ranker in ("shipped", "gnn", "trees", "blend", "random"):
        row = summary.loc[(ranker, "ranking_loss")]
        assert row["value"] >= 0, ranker
        if row["ci_low"] == row["ci_low"]:  # the tiny test split may hold one target: no CI
            assert row["ci_low"] <= row["value"] <= row["ci_high"], ranker
    best = min(("gnn", "trees", "blend"), key=lambda r: summary.loc[(r, "ranking_loss"), "value"])
    # not worse than the best family beyond the noise (an undefined interval is no evidence)
    assert not summary.loc[(f"shipped_minus_{best}", "ranking_loss"), "ci_low"] > 0
    bundle = json.loads((repo / "runs/bundle/bundle.json").read_text())
    assert {"trees.txt", "scorer.json", "model.safetensors"} <= set(bundle["files"])

    # Which family ships is decided after training: forcing one retrains nothing.
    _write_params(repo, {"model.family": "trees"})
    out = _run([*DVC, "repro"], repo, env)
    assert _ran(out) | _restored(out) >= {"scorer", "calibration", "bundle", "evaluate"}
    assert not (_ran(out) & TRAINING) and "trees" not in _ran(out)
    assert (
        json.loads((repo / "runs/evaluate/metrics.json").read_text())["shipped_family"] == "trees"
    )
    _write_params(repo)
    _run([*DVC, "repro"], repo, env)


def test_partial_changes_rerun_only_their_stages(baseline: tuple[Path, dict, str, Path]) -> None:
    repo, env, _, _ = baseline
    # A calibration param reruns only calibration and what consumes it.
    _write_params(repo, {"calibration.coverage": 0.8})
    assert _ran(_run([*DVC, "repro"], repo, env)) == {"calibration", "bundle", "evaluate"}

    # A dataset param reruns the generator and the schema check, and leaves every stage
    # below them out of date.
    _write_params(repo, {"calibration.coverage": 0.8, "dataset.label_noise": 0.05})
    assert _ran(_run([*DVC, "repro", "schema"], repo, env)) == {"dataset", "schema"}
    status = _run([*DVC, "status"], repo, env)
    assert "train@0-base" in status and "modified:           data/schema" in status

    # Back to the old data plus a new seed: the old member's inputs are as locked again, so
    # only the new sweep member trains (the data stages are restored from the run-cache).
    _write_params(repo, {"calibration.coverage": 0.8, "sweep.seeds": [0, 1]})
    ran = _ran(_run([*DVC, "repro", "selection"], repo, env))
    assert ran == {"train@1-base", "selection"}
    assert _run(["git", "for-each-ref", "refs/exps"], repo, env).strip() != ""  # the queued exps


def test_failed_schema_check_keeps_last_good_lock(repo_copy: tuple[Path, dict[str, str]]) -> None:
    repo, env = repo_copy
    dvc = DVC
    _write_params(repo)
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


SEED_000 = sorted((SHARED / "seeds").glob("000_*.txt"))


def _seed_000_config() -> str:
    """The YAML block of seed 000's README, verbatim (what its users run)."""
    return SEED_000[0].read_text().split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(not SEED_000, reason=f"{SHARED / 'seeds'} is not here")
def test_seed_000_config_imports_and_the_pipeline_runs_on_it(
    baseline: tuple[Path, dict, str, Path],
) -> None:
    repo, env, _, _ = baseline
    _write_params(repo)
    (repo / "stack").mkdir(exist_ok=True)
    (repo / "stack" / "config.yaml").write_text(_seed_000_config())
    graphqa = str(Path(sys.executable).parent / "graphqa")
    out = _run([graphqa, "config", "import", "stack/config.yaml", "--keep-paths"], repo, env)
    assert "trainer.num_epochs -> trainer.max_epochs = 200" in out
    imported = yaml.safe_load((repo / "params.yaml").read_text())
    assert imported["model"]["attention_head"] == 8
    assert imported["paths"]["graph_dir"] == "data/dataset/graphs"  # --keep-paths
    # The imported recipe as is, but 2 epochs instead of 200 to keep the test short.
    imported["trainer"]["max_epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(imported, sort_keys=False))
    ran = _ran(_run([*DVC, "repro"], repo, env))
    assert "train@0-base" in ran and "evaluate" in ran
    summary = json.loads((repo / "runs/train/0-base/summary.json").read_text())
    assert summary["params"]["optimizer"]["learning_rate"] == 0.005
    assert summary["params"]["trainer"]["accumulate_grad_batches"] == 16
