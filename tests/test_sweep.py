"""``graphqa sweep``: shards, worktree workers sharing the DVC cache, and remote shards.

The pure parts (sharding, member listing, the workspace check) and a toy two-stage DVC project
run fast; the training sweeps (``e2e``) reuse test_pipeline_e2e's isolated temp repo on the
tiny profile and check that a parallel sweep leaves exactly what a serial ``dvc repro`` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphqa.sweep import (
    SweepError,
    _threads_warning,
    edits_to_copy,
    group_members,
    make_plan,
    parse_porcelain,
    parse_shard,
    split_round_robin,
)

from .test_pipeline_e2e import DVC, _env, _run, _write_params, repo_copy  # noqa: F401

GRAPHQA = str(Path(sys.executable).parent / "graphqa")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_round_robin_spreads_neighbours_over_shards() -> None:
    members = [f"train@{i}-base" for i in range(5)]
    assert split_round_robin(members, 2) == [members[0::2], members[1::2]]
    assert split_round_robin(members, 1) == [members]
    shards = split_round_robin(members, 7)
    assert sorted(m for s in shards for m in s) == sorted(members) and shards[6] == []
    with pytest.raises(SweepError, match="positive"):
        split_round_robin(members, 0)


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0"])
def test_bad_shard_is_one_line_naming_the_form(text: str) -> None:
    with pytest.raises(SweepError, match=r"expected I/N with 0 <= I < N"):
        parse_shard(text)


def test_shard_parses_zero_based() -> None:
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)


def test_members_are_the_group_s_matrix_entries_in_order() -> None:
    names = ["dataset", "train@0-base", "train@0-lr", "trainer", "finetune_phase2@101"]
    assert group_members(names, "train") == ["train@0-base", "train@0-lr"]
    with pytest.raises(SweepError, match="'flt_retrain' has no matrix members"):
        group_members(names, "flt_retrain")


def test_porcelain_keeps_the_new_path_of_a_rename() -> None:
    raw = " M params.yaml\0R  new.py\0old.py\0?? notes.txt\0"
    assert parse_porcelain(raw) == [(" M", "params.yaml"), ("R ", "new.py"), ("??", "notes.txt")]


def test_workspace_check_copies_param_edits_and_refuses_other_edits() -> None:
    outputs = {"runs/selection/metrics.json", "runs/train/0-base/checkpoints"}
    deps = {"src/graphqa/model.py", "stages/train.py", "data/schema", "params.yaml"}
    status = [
        (" M", "params.yaml"),
        (" M", "dvc.yaml"),
        (" M", "dvc.lock"),
        (" M", "runs/selection/metrics.json"),  # a git-tracked metric the pipeline wrote
        (" M", "runs/train/.gitignore"),
        ("??", "notes.txt"),
        (" M", "README.md"),  # no stage reads it: DVC does not hash it, workers need not see it
    ]
    assert edits_to_copy(status, outputs, deps) == ["dvc.yaml", "params.yaml"]
    with pytest.raises(SweepError, match=r"^src/graphqa/model.py: modified but not committed"):
        edits_to_copy([*status, (" M", "src/graphqa/model.py")], outputs, deps)
    with pytest.raises(SweepError, match=r"^stages/train.py: untracked but a dependency"):
        edits_to_copy([("??", "stages/train.py")], outputs, deps)


# A toy project: an upstream stage and a 3-member matrix, each a one-line file write.
TOY_DVC = """\
stages:
  prep:
    cmd: python toy.py prep
    deps:
      - toy.py
    outs:
      - prep.txt
  train:
    matrix:
      seed: ${sweep.seeds}
    cmd: python toy.py ${item.seed}
    deps:
      - toy.py
      - prep.txt
    params:
      - sweep.seeds
    outs:
      - runs/${item.seed}.txt
"""
TOY_PY = """\
import os, sys
if sys.argv[1] == "prep":
    open("prep.txt", "w").write("prep\\n")
else:
    if sys.argv[1] == "13":
        sys.exit("unlucky seed")
    os.makedirs("runs", exist_ok=True)
    open(f"runs/{sys.argv[1]}.txt", "w").write(open("prep.txt").read() + sys.argv[1])
"""
TOY_PARAMS = "sweep:\n  seeds: {seeds}\ntrainer:\n  num_threads: 1\n"


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(TOY_DVC)
    (repo / "toy.py").write_text(TOY_PY)
    (repo / "params.yaml").write_text(TOY_PARAMS.format(seeds="[0, 1, 2]"))
    env = {**_env(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    _run(["git", "init", "-q"], repo, env)
    _run([*DVC, "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "toy"], repo, env)
    return repo, env


def test_plan_lists_members_and_the_stages_they_need(toy: tuple[Path, dict]) -> None:
    plan = make_plan(toy[0], "train")
    assert plan.members == ["train@0", "train@1", "train@2"]
    assert plan.upstream == ["prep"]
    assert {"toy.py", "prep.txt"} <= plan.deps and "runs/1.txt" in plan.outputs


def test_oversubscribed_threads_warn(toy: tuple[Path, dict]) -> None:
    assert _threads_warning(toy[0], 1) is None
    warning = _threads_warning(toy[0], (os.cpu_count() or 1) + 1)
    assert warning is not None and "x trainer.num_threads=1 >" in warning


def test_toy_sweep_fills_the_run_cache_and_cleans_up(toy: tuple[Path, dict]) -> None:
    repo, env = toy
    (repo / "params.yaml").write_text(TOY_PARAMS.format(seeds="[0, 1, 2, 3]"))  # uncommitted
    out = _run([GRAPHQA, "sweep", "--jobs", "2"], repo, env)
    assert "worker 1: dvc repro train@1 train@3" in out
    assert "edits copied into every worker: params.yaml" in out
    assert _run(["git", "worktree", "list", "--porcelain"], repo, env).count("worktree ") == 1
    assert _run(["git", "status", "--porcelain"], repo, env).split() == ["M", "params.yaml"]
    back = _run([*DVC, "repro"], repo, env)
    assert "Running stage" not in back
    for stage in ("prep", "train@0", "train@1", "train@2", "train@3"):
        assert f"Stage '{stage}' is cached - skipping run" in back
    assert (repo / "runs/3.txt").read_text() == "prep\n3"


def test_toy_sweep_refuses_an_uncommitted_code_edit(toy: tuple[Path, dict]) -> None:
    repo, env = toy
    (repo / "toy.py").write_text(TOY_PY + "# edited\n")
    proc = subprocess.run(
        [GRAPHQA, "sweep", "--jobs", "2"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "graphqa: error: toy.py: modified but not committed; workers check out HEAD and only "
        "take params.yaml/dvc.yaml edits, so commit or revert it first"
    ]
    assert not (repo / ".graphqa").exists()


def test_a_failing_member_fails_the_sweep_naming_it_and_its_log(toy: tuple[Path, dict]) -> None:
    repo, env = toy
    (repo / "params.yaml").write_text(TOY_PARAMS.format(seeds="[0, 13]"))
    proc = subprocess.run(
        [GRAPHQA, "sweep", "--jobs", "2"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    line = "graphqa sweep: member 'train@13' failed; log: .graphqa/logs/worker-1.log"
    assert proc.stderr.strip().splitlines() == [line]
    assert "unlucky seed" in (repo / ".graphqa/logs/worker-1.log").read_text()
    assert _run(["git", "worktree", "list", "--porcelain"], repo, env).count("worktree ") == 1


# The training sweeps: the tiny profile with 2 seeds x 2 variants.
SWEEP = {
    "sweep.seeds": [0, 1],
    "sweep.variants": {"base": {}, "lr": {"optimizer.learning_rate": 0.001}},
}
MEMBERS = ["train@0-base", "train@0-lr", "train@1-base", "train@1-lr"]


@pytest.fixture(scope="module")
def sweep_repo(repo_copy: tuple[Path, dict[str, str]]) -> tuple[Path, dict[str, str]]:  # noqa: F811
    repo, env = repo_copy
    _write_params(repo, SWEEP)
    _run(["git", "commit", "-qam", "4-member sweep"], repo, env)
    return repo, env


@pytest.fixture(scope="module")
def serial_lock(sweep_repo: tuple[Path, dict[str, str]]) -> dict:
    """dvc.lock of a plain serial ``dvc repro`` of the members in a clone of its own."""
    repo, env = sweep_repo
    serial = repo.parent / "serial"
    _run(["git", "clone", "-q", str(repo), str(serial)], repo.parent, env)
    out = _run([*DVC, "repro", *MEMBERS], serial, env)
    assert all(f"Running stage '{m}'" in out for m in MEMBERS)
    return yaml.safe_load((serial / "dvc.lock").read_text())


def _trained(output: str) -> list[str]:
    return [m for m in MEMBERS if f"Running stage '{m}'" in output]


@pytest.mark.e2e
def test_local_sweep_then_repro_trains_nothing_and_matches_serial(
    sweep_repo: tuple[Path, dict[str, str]], serial_lock: dict
) -> None:
    repo, env = sweep_repo
    out = _run([GRAPHQA, "sweep", "--jobs", "2", "--group", "train"], repo, env)
    assert "worker 0: dvc repro train@0-base train@1-base" in out
    back = _run([*DVC, "repro", *MEMBERS], repo, env)
    assert _trained(back) == [] and "Running stage" not in back
    assert all(f"Stage '{m}' is cached - skipping run" in back for m in MEMBERS)
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == serial_lock
    assert _run(["git", "worktree", "list", "--porcelain"], repo, env).count("worktree ") == 1


@pytest.mark.e2e
def test_remote_shards_run_by_the_slurm_and_skypilot_recipes_then_collect_trains_nothing(
    sweep_repo: tuple[Path, dict[str, str]], serial_lock: dict
) -> None:
    repo, env = sweep_repo
    tmp = repo.parent
    remote = tmp / "remote"
    # Shard 0 is a SkyPilot job (its `run:` commands in the clone its `setup:` would have
    # made, the venv linked in); shard 1 a SLURM array task (sbatch only sets these variables,
    # then runs the script). Both run the shipped recipes unchanged.
    clones = [tmp / "sky" / "graphqa", tmp / "shard1", tmp / "coordinator"]
    for clone in clones:
        _run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
        _run([*DVC, "remote", "add", "--local", "store", str(remote)], clone, env)
    (clones[0] / ".venv").symlink_to(Path(sys.executable).parents[1])
    sky = yaml.safe_load((RECIPES / "skypilot" / "sweep.yaml").read_text())
    sky_job = {**env, **{k: str(v) for k, v in sky["envs"].items()}, "SHARD": "0", "N": "2"}
    out = _run(["bash", "-c", sky["run"]], clones[0].parent, sky_job)
    assert _trained(out) == split_round_robin(MEMBERS, 2)[0]
    slurm_task = {
        **env,
        "SLURM_SUBMIT_DIR": str(clones[1]),
        "SLURM_ARRAY_JOB_ID": "7",
        "SLURM_ARRAY_TASK_ID": "1",
        "N": "2",
        "REMOTE": "store",
        "TMPDIR": str(tmp),
    }
    out = _run(["bash", str(RECIPES / "slurm" / "sweep_array.sbatch")], tmp, slurm_task)
    assert _trained(out) == split_round_robin(MEMBERS, 2)[1]
    assert not (tmp / "graphqa-sweep-7-1").exists()  # the task's own clone is cleaned up
    coordinator = clones[2]
    out = _run([GRAPHQA, "sweep", "--collect", "--remote", "store"], coordinator, env)
    assert "Running stage" not in out and "4 of 4 members restored" in out
    assert yaml.safe_load((coordinator / "dvc.lock").read_text()) == serial_lock
    assert "Data and pipelines are up to date" in _run([*DVC, "repro", *MEMBERS], coordinator, env)


# --- A real SLURM scheduler: the shipped job array submitted with ``sbatch --wait`` ----------
# ``bash .ci/slurm_up.sh`` starts a one-node cluster (CI runs it before the tests). The same
# 4-member sweep runs as a 2-task array from a clone of its repo, each task in a clone of its
# own, through a local-directory DVC remote; a coordinator clone then collects the members and
# must train nothing and write a serial run's dvc.lock (the serial run above, shared). Skips
# only when there is no SLURM client (``sbatch``) or the cluster does not answer ``sinfo``.

SHARDS = 2
RECIPE_MEM_MB = 8 * 1024  # the recipe's #SBATCH --mem=8G
WAIT_S = 900


@pytest.fixture(scope="module")
def node_mem_mb() -> int:
    """The largest node's memory in MB; skips when there is no cluster to submit to."""
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM here: sbatch not on PATH (bash .ci/slurm_up.sh starts a cluster)")
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%m"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.skip("SLURM cluster not responding: sinfo timed out after 30 s")
    if proc.returncode != 0:
        pytest.skip(f"SLURM cluster not responding: sinfo failed: {proc.stderr.strip()}")
    sizes = [int(re.sub(r"\D", "", line)) for line in proc.stdout.split() if line.strip()]
    assert sizes, f"sinfo lists no nodes:\n{proc.stdout}"
    return max(sizes)


def _sbatch_wait(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """``sbatch --wait ...`` from ``cwd``; on a timeout, cancel the jobs submitted from there."""
    try:
        proc = subprocess.run(
            ["sbatch", "--wait", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
    except subprocess.TimeoutExpired:
        queue = subprocess.run(
            ["squeue", "-h", "-o", "%F %Z %T %R"], capture_output=True, text=True, timeout=30
        ).stdout
        jobs = {line.split()[0] for line in queue.splitlines() if f" {cwd} " in f"{line} "}
        if jobs:
            subprocess.run(["scancel", *sorted(jobs)], timeout=30)
        pytest.fail(f"sbatch --wait still waiting after {WAIT_S} s; cancelled {jobs}:\n{queue}")
    logs = "\n".join(f"== {p.name}\n{p.read_text()}" for p in sorted(cwd.glob("*.log")))
    assert proc.returncode == 0, f"sbatch failed:\n{proc.stdout}\n{proc.stderr}\n{logs}"
    return proc.stdout


@pytest.mark.e2e
def test_the_slurm_array_recipe_on_a_real_cluster_then_collect_trains_nothing(
    node_mem_mb: int,
    sweep_repo: tuple[Path, dict[str, str]],
    serial_lock: dict,
) -> None:
    repo, env = sweep_repo
    tmp = repo.parent
    remote, scratch = tmp / "slurm-remote", tmp / "slurm-tmp"
    scratch.mkdir()
    submit, coordinator = tmp / "slurm-submit", tmp / "slurm-coordinator"
    for clone in (submit, coordinator):
        _run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
        _run([*DVC, "remote", "add", "--local", "store", str(remote)], clone, env)
    (submit / ".venv").symlink_to(Path(sys.executable).parents[1])  # the recipe activates it

    # The recipe unchanged; only what this node or the tiny profile needs is overridden:
    # --cpus-per-task = trainer.num_threads (1 here, 2 in the recipe) so both tasks fit at once.
    threads = yaml.safe_load((repo / "params.yaml").read_text())["trainer"]["num_threads"]
    overrides = [f"--cpus-per-task={threads}"]
    if node_mem_mb < RECIPE_MEM_MB:  # a small node: as much as it has
        overrides.append(f"--mem={node_mem_mb}M")
    out = _sbatch_wait(
        [
            f"--array=0-{SHARDS - 1}",
            *overrides,
            f"--export=ALL,N={SHARDS},REMOTE=store",
            str(RECIPES / "slurm" / "sweep_array.sbatch"),
        ],
        submit,
        {**env, "TMPDIR": str(scratch)},  # the tasks' own clones go here
    )
    job = re.search(r"Submitted batch job (\d+)", out)
    assert job, out
    job_id = job.group(1)
    for task, shard in enumerate(split_round_robin(MEMBERS, SHARDS)):
        log = (submit / f"graphqa-sweep-{job_id}_{task}.log").read_text()
        assert _trained(log) == shard, log
        assert not (scratch / f"graphqa-sweep-{job_id}-{task}").exists()  # clone removed

    out = _run([GRAPHQA, "sweep", "--collect", "--remote", "store"], coordinator, env)
    assert "Running stage" not in out
    assert f"{len(MEMBERS)} of {len(MEMBERS)} members restored" in out
    assert yaml.safe_load((coordinator / "dvc.lock").read_text()) == serial_lock
