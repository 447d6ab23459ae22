"""Which stages' outputs differ between two ``dvc.lock`` files (a refactor's byte-identity check).

Why: a change that must not alter behaviour (issue 21's restructuring) still changes every
code-dependency hash and command line in ``dvc.lock``; what must stay equal are the *outputs*.
This compares each stage's ``outs`` hashes (metrics and plots included, tracked or cached).

Usage::

    git show REV:dvc.lock > /tmp/before.lock && make repro
    .venv/bin/python benchmarks/lock_outputs_diff.py /tmp/before.lock dvc.lock
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def stage_outputs(lock: Path) -> dict[str, dict[str, str | None]]:
    """Stage name -> {output path: md5} of a ``dvc.lock``."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {
        name: {out["path"]: out.get("md5") for out in stage.get("outs", [])}
        for name, stage in stages.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path, nargs="?", default=Path("dvc.lock"))
    args = parser.parse_args()
    before, after = stage_outputs(args.before), stage_outputs(args.after)
    only = sorted(set(before) ^ set(after))
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    for name in changed:
        for path in sorted(set(before[name]) | set(after[name])):
            if before[name].get(path) != after[name].get(path):
                print(f"{name}: {path}: {before[name].get(path)} -> {after[name].get(path)}")
    for name in only:
        print(f"{name}: only in {'before' if name in before else 'after'}")
    same = len(set(before) & set(after)) - len(changed)
    print(f"{same} of {len(set(before) | set(after))} stages with byte-identical outputs")
    return 1 if changed or only else 0


if __name__ == "__main__":
    sys.exit(main())
