"""The SLURM recipe on a real scheduler: the shipped job array submitted with ``sbatch --wait``.

``bash .ci/slurm_up.sh`` starts a one-node cluster (CI runs it before the tests). The 4-member
tiny sweep of test_sweep runs as a 2-task array from a clone of its repo, each task in a clone
of its own, through a local-directory DVC remote; a coordinator clone then collects the members
with ``graphqa sweep --collect`` and must train nothing and write a serial run's dvc.lock.
Skips only when there is no SLURM client (``sbatch``) or the cluster does not answer ``sinfo``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphqa.sweep import split_round_robin

from .test_sweep import (  # noqa: F401  (repo_copy: the fixture sweep_repo builds on)
    DVC,
    GRAPHQA,
    MEMBERS,
    RECIPES,
    _run,
    _trained,
    repo_copy,
    serial_lock,
    sweep_repo,
)

pytestmark = pytest.mark.e2e

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


def test_the_slurm_array_recipe_on_a_real_cluster_then_collect_trains_nothing(
    node_mem_mb: int,
    sweep_repo: tuple[Path, dict[str, str]],  # noqa: F811
    serial_lock: dict,  # noqa: F811
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
