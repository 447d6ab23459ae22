"""Loaded by every Python process started with this folder on PYTHONPATH (the e2e test puts
it there for `dvc repro`): records each file a DVC stage script opens or lists, so the test can
fail on inputs the stage does not declare. Only processes running ``stages/*.py`` write a log.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

_LOG_DIR = os.environ.get("GRAPHQA_AUDIT_DIR")
_seen: set[tuple[str, str]] = set()


def _hook(event: str, args: tuple) -> None:
    if event == "open":
        path, mode = args[0], args[1]
        if mode is None and isinstance(path, str) and not os.path.isabs(path):
            # os.open of a name relative to a dir_fd (shutil.rmtree's walk of a temporary
            # folder): the audit event does not carry the fd, so the path cannot be resolved
            return
        kind = "write" if isinstance(mode, str) and any(c in mode for c in "wax+") else "read"
    elif event in ("os.listdir", "os.scandir"):
        path, kind = args[0], "list"
    else:
        return
    if isinstance(path, (str, os.PathLike)):
        _seen.add((kind, os.path.abspath(os.fspath(path))))


def _write() -> None:
    script = sys.argv[0] if sys.argv else ""
    if not script.startswith("stages/"):
        return
    record = {"argv": sys.argv, "cwd": os.getcwd(), "files": sorted(_seen)}
    with open(os.path.join(_LOG_DIR, f"{os.getpid()}.json"), "w") as fh:
        json.dump(record, fh)


if _LOG_DIR:
    sys.addaudithook(_hook)
    atexit.register(_write)
