"""``graphqa sweep``: train the members of a matrix stage in parallel, locally or on a cluster.

A matrix group (``train``, ``cv``, ``finetune_phase2``, ``flt_retrain``) expands to members such as
``train@0-base``. The members are split round-robin into N shards, each reproduced by its own
``dvc repro`` in its own workspace:

* ``--jobs N`` (one machine): N ``git worktree add --detach`` checkouts of HEAD under
  ``.graphqa/workers/`` (ignored by git through ``.graphqa/.gitignore``; DVC skips them as
  sub-repos), each with the working tree's edited ``params.yaml``/``dvc.yaml`` copied in and
  ``cache.dir`` pointing at the main project's cache. DVC keeps its run-cache inside the cache
  directory, so the workers' results reach the main workspace only through that shared cache:
  afterwards the main workspace's ``dvc repro`` restores every member from the run-cache instead
  of training it, and writes the same ``dvc.lock`` a serial ``dvc repro`` would. The stages the
  members depend on (dataset, schema, ...) are reproduced (or restored) once, in the first
  worktree, before the workers start, so no two workers build them concurrently.
* ``--shard I/N --remote NAME`` (a scheduler task, e.g. a SLURM array element): in the current
  clone, pull what the shard's members need from the DVC remote, reproduce them and push their
  outputs with the run-cache. The coordinator then runs ``dvc pull --run-cache -r NAME`` and
  ``dvc repro`` (``graphqa sweep --collect --remote NAME`` does both for the group).

Why workers keep ``trainer.num_threads`` as it is: it is a declared param of the training
stages, so a per-worker value would change the stage hash, and the results do depend on it.
Training the tiny test profile for 3 epochs with ``num_threads`` 1 and 2 gave checkpoints whose
weights differ in 17 of 25 tensors (max abs difference 9e-8: intra-op sums are split by
thread), while two runs with 1 thread were byte-identical. A non-hashed override would
therefore make sweep results differ from a serial ``dvc repro`` while DVC believed them equal.
So every worker trains exactly what ``params.yaml`` says (bit-identical to a serial run) and
the command warns when ``N x trainer.num_threads`` exceeds the machine's cores; choose ``--jobs``
(or lower ``num_threads`` in ``params.yaml``, which is a new experiment) accordingly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# DVC and networkx are imported inside the functions that use them: the CLI builds its parser
# from GROUPS, and importing them here would add ~0.4 s (measured) to every `graphqa` command.
GROUPS = ("train", "cv", "finetune_phase2", "flt_retrain")
#: Edited files copied from the working tree into every worker (``-S``-style edits).
COPIED_EDITS = ("params.yaml", "dvc.yaml")
#: Tracked files that may differ from HEAD without being copied: DVC rewrites them itself.
REGENERATED = ("dvc.lock",)
STATE_DIR = ".graphqa"
DVC = (sys.executable, "-m", "dvc")
_RUNNING = re.compile(r"Running stage '([^']+)'")


class SweepError(ValueError):
    """Bad input or an unusable workspace; the message is the one line the user sees."""


@dataclass(frozen=True)
class Plan:
    """What a sweep runs: the group's members, the stages they need first, and the workspace
    facts the checks use (every stage's outputs and the needed stages' dependencies)."""

    root: Path
    members: list[str]
    upstream: list[str]
    outputs: set[str]
    deps: set[str]
    cache_dir: Path


def split_round_robin(members: Sequence[str], n: int) -> list[list[str]]:
    """``n`` shards, member ``k`` in shard ``k % n``: neighbouring members (often the same
    variant with other seeds) land on different workers, so shards take similar time."""
    if n < 1:
        raise SweepError(f"--jobs/--shard: expected a positive number of shards, got {n}")
    return [list(members[i::n]) for i in range(n)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (SLURM ``--array=0-(N-1)`` numbering)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise SweepError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def group_members(stage_names: Iterable[str], group: str) -> list[str]:
    """The members of matrix stage ``group`` among DVC's stage names, in dvc.yaml order."""
    members = [name for name in stage_names if name.startswith(f"{group}@")]
    if not members:
        raise SweepError(f"dvc.yaml: stage '{group}' has no matrix members (expected {group}@...)")
    return members


def parse_porcelain(raw: str) -> list[tuple[str, str]]:
    """``git status --porcelain=v1 -z`` -> ``[(XY, path)]`` (renames keep the new path)."""
    entries: list[tuple[str, str]] = []
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        field = fields[i]
        i += 1
        if len(field) < 4:
            continue
        code, path = field[:2], field[3:]
        if "R" in code or "C" in code:
            i += 1  # the original path follows as its own field
        entries.append((code, path))
    return entries


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def edits_to_copy(
    status: Sequence[tuple[str, str]], outputs: set[str], deps: set[str]
) -> list[str]:
    """The edited files a worker needs; refuse a workspace a HEAD checkout cannot reproduce.

    Workers check out HEAD, so an edit they would not see (a modified ``src/`` file, an
    uncommitted stage script the sweep depends on) would make them train something other
    than what the main workspace's ``dvc repro`` then looks up in the run-cache.
    """
    copies: list[str] = []
    for code, path in status:
        if code == "!!":
            continue
        if code == "??":
            if _inside(path, deps):
                raise SweepError(
                    f"{path}: untracked but a dependency of the sweep; workers check out "
                    "HEAD, so commit it first"
                )
            continue
        if path in COPIED_EDITS:
            copies.append(path)
        elif path in REGENERATED or Path(path).name == ".gitignore" or _inside(path, outputs):
            continue  # written by DVC or by the stages themselves
        elif not _inside(path, deps):
            continue  # no stage of the sweep reads it (a README edit): DVC hashes deps only
        else:
            raise SweepError(
                f"{path}: modified but not committed; workers check out HEAD and only take "
                f"{'/'.join(COPIED_EDITS)} edits, so commit or revert it first"
            )
    return sorted(set(copies))


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SweepError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def project_root(start: Path | None = None) -> Path:
    """The git work tree holding ``dvc.yaml`` (sweeps run from the project root)."""
    root = Path(_git(start or Path.cwd(), "rev-parse", "--show-toplevel").strip())
    if not (root / "dvc.yaml").exists():
        raise SweepError(f"{root / 'dvc.yaml'}: not found (run graphqa sweep in the project)")
    return root


def make_plan(root: Path, group: str) -> Plan:
    """Read the pipeline as DVC resolves it from the working tree (params edits included)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        try:
            index = repo.index
        except DvcException as exc:
            raise SweepError(f"dvc.yaml: {exc}") from exc
        by_name = {stage.name: stage for stage in index.stages}
        members = group_members(by_name, group)
        needed: set[str] = set()
        for name in members:
            needed |= {s.name for s in nx.descendants(index.graph, by_name[name])}
        order = [s.name for s in reversed(list(nx.topological_sort(index.graph)))]
        upstream = [name for name in order if name in needed and name not in members]

        def rel(path: str) -> str | None:
            relative = os.path.relpath(path, root)
            return None if relative.startswith("..") else relative.replace(os.sep, "/")

        outputs = {r for s in index.stages for o in s.outs if (r := rel(o.fs_path))}
        deps = {
            r for name in [*members, *upstream] for d in by_name[name].deps if (r := rel(d.fs_path))
        }
        cache_dir = Path(repo.cache.local_cache_dir)
    return Plan(root, members, upstream, outputs, deps, cache_dir)


def _worker_env(workspace: Path) -> dict[str, str]:
    """This interpreter's scripts first on PATH and the workspace's own ``src`` first on
    PYTHONPATH: an editable install would otherwise import the main checkout's code."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(workspace / "src"), env.get("PYTHONPATH", "")] if p
    )
    return env


def _threads_warning(root: Path, jobs: int) -> str | None:
    from graphqa.config import load_params

    threads = load_params(root / "params.yaml").trainer.num_threads
    cores = os.cpu_count() or 1
    if jobs * threads > cores:
        return (
            f"graphqa sweep: warning: {jobs} workers x trainer.num_threads={threads} > "
            f"{cores} CPU cores; they will slow each other (results are unaffected)"
        )
    return None


def _failed_member(log: Path, shard: Sequence[str]) -> str:
    """The stage a failed ``dvc repro`` was running: the last one its log started."""
    started = _RUNNING.findall(log.read_text(errors="replace")) if log.exists() else []
    return started[-1] if started else shard[0]


def _add_worktree(plan: Plan, path: Path, copies: Sequence[str]) -> None:
    if path.exists():
        _git(plan.root, "worktree", "remove", "--force", str(path))
    _git(plan.root, "worktree", "add", "--detach", str(path), "HEAD")
    for name in copies:
        shutil.copy2(plan.root / name, path / name)
    env = _worker_env(path)
    # Hardlinks/symlinks: the worker's outputs enter the shared cache without copies.
    for key, value in (
        ("cache.dir", str(plan.cache_dir)),
        ("cache.type", "reflink,hardlink,symlink,copy"),
    ):
        proc = subprocess.run(
            [*DVC, "config", "--local", key, value], cwd=path, env=env, capture_output=True
        )
        if proc.returncode != 0:
            raise SweepError(f"{path}: dvc config --local {key} failed: {proc.stderr!r}")


def run_local(
    group: str, jobs: int, dry_run: bool = False, echo: Callable[[str], None] = print
) -> int:
    """Run the group's members in ``jobs`` worktrees at once; 0 on success, 1 on a failure."""
    root = project_root()
    plan = make_plan(root, group)
    status = parse_porcelain(_git(root, "status", "--porcelain=v1", "-z", "-uall"))
    copies = edits_to_copy(status, plan.outputs, plan.deps)
    shards = [s for s in split_round_robin(plan.members, jobs) if s]
    warning = _threads_warning(root, len(shards))
    if warning:
        print(warning, file=sys.stderr)
    workers = root / STATE_DIR / "workers"
    logs = root / STATE_DIR / "logs"
    if plan.upstream:
        echo(f"prepare (worker 0, first): dvc repro {' '.join(plan.upstream)}")
    for i, shard in enumerate(shards):
        echo(f"worker {i}: dvc repro {' '.join(shard)}")
    if copies:
        echo(f"edits copied into every worker: {', '.join(copies)}")
    if dry_run:
        return 0
    (root / STATE_DIR).mkdir(exist_ok=True)
    (root / STATE_DIR / ".gitignore").write_text("*\n")
    logs.mkdir(parents=True, exist_ok=True)
    paths = [workers / f"w{i}" for i in range(len(shards))]
    try:
        for path in paths:
            _add_worktree(plan, path, copies)
        if plan.upstream:
            log = logs / "prepare.log"
            with log.open("w") as out:
                proc = subprocess.run(
                    [*DVC, "repro", *plan.upstream],
                    cwd=paths[0],
                    env=_worker_env(paths[0]),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if proc.returncode != 0:
                stage = _failed_member(log, plan.upstream)
                print(
                    f"graphqa sweep: stage '{stage}' failed; log: {log.relative_to(root)}",
                    file=sys.stderr,
                )
                return 1
        running = []
        for i, (path, shard) in enumerate(zip(paths, shards, strict=True)):
            log = logs / f"worker-{i}.log"
            with log.open("w") as out:
                running.append(
                    (
                        subprocess.Popen(
                            [*DVC, "repro", *shard],
                            cwd=path,
                            env=_worker_env(path),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        ),
                        log,
                        shard,
                    )
                )
        failed = [(log, shard) for proc, log, shard in running if proc.wait() != 0]
        for log, shard in failed:
            print(
                f"graphqa sweep: member '{_failed_member(log, shard)}' failed; "
                f"log: {log.relative_to(root)}",
                file=sys.stderr,
            )
        if failed:
            return 1
    finally:
        for path in paths:
            if path.exists():
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(path)],
                    cwd=root,
                    capture_output=True,
                )
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)
    echo(
        f"{len(plan.members)} members of '{group}' are in the run-cache; `dvc repro` restores "
        "them here without training"
    )
    return 0


def _dvc(args: Sequence[str], root: Path) -> None:
    """Run DVC in the current clone with its output shown (the scheduler keeps the log)."""
    proc = subprocess.run([*DVC, *args], cwd=root, env=_worker_env(root))
    if proc.returncode != 0:
        raise SweepError(f"dvc {' '.join(args)}: failed (exit {proc.returncode}), see above")


def repro_from_remote(root: Path, targets: Sequence[str], remote: str) -> set[str]:
    """``dvc repro --pull`` with ``remote`` as the default remote; returns the stages that ran.

    In DVC 3 ``dvc pull --run-cache`` fetches the run-cache entries but not the outputs they
    name (those come from ``dvc.lock``, which a fresh clone lacks for the sweep), so a plain
    ``dvc repro`` afterwards would retrain. ``repro --pull`` fetches each matching entry's
    outputs as it restores the stage, but only from the default remote and the CLI has no
    ``-r``, so this runs it in-process with ``Repo(remote=...)``, which sets ``core.remote``
    for this call only (the user's config is left alone).
    """
    import logging

    from dvc.exceptions import DvcException
    from dvc.logger import setup
    from dvc.repo import Repo

    ran: set[str] = set()

    class _Ran(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if match := _RUNNING.match(record.getMessage()):
                ran.add(match[1])

    dvc_logger = logging.getLogger("dvc")
    if not dvc_logger.handlers:  # DVC's console output, once per process
        setup()
    handler = _Ran()
    dvc_logger.addHandler(handler)
    env = _worker_env(root)
    try:
        with Repo(str(root), remote=remote) as repo:
            repo.reproduce(
                targets=list(targets),
                pull=True,
                run_env={"PATH": env["PATH"], "PYTHONPATH": env["PYTHONPATH"]},
            )
    except DvcException as exc:
        raise SweepError(f"dvc repro --pull (remote '{remote}'): {exc}") from exc
    finally:
        dvc_logger.removeHandler(handler)
    return ran


def run_shard(group: str, shard: str, remote: str, echo: Callable[[str], None] = print) -> int:
    """One scheduler task: reproduce shard I/N's members, pulling from ``remote`` whatever
    is already there (upstream stages another task built, a member of a retried task), then
    push their outputs with the run-cache so the coordinator can restore them."""
    index, total = parse_shard(shard)
    root = project_root()
    plan = make_plan(root, group)
    mine = split_round_robin(plan.members, total)[index]
    if not mine:
        echo(f"shard {index}/{total}: no members of '{group}' (only {len(plan.members)})")
        return 0
    echo(f"shard {index}/{total}: {' '.join(mine)}")
    repro_from_remote(root, mine, remote)
    _dvc(["push", "-r", remote, "--run-cache", "--with-deps", *mine], root)
    return 0


def collect(group: str, remote: str, echo: Callable[[str], None] = print) -> int:
    """Coordinator: restore the group's members (and what they need) from ``remote``'s
    run-cache. A member nobody pushed is trained here and named, so the result is complete."""
    root = project_root()
    plan = make_plan(root, group)
    trained = sorted(repro_from_remote(root, plan.members, remote) & set(plan.members))
    if trained:
        print(
            f"graphqa sweep: warning: not in the run-cache of '{remote}', trained here: "
            f"{', '.join(trained)}",
            file=sys.stderr,
        )
    echo(f"{len(plan.members) - len(trained)} of {len(plan.members)} members restored")
    return 0
