"""Writing pipeline files so that readers never see half of one, and JSON that is byte-stable.

Every stage output is hashed by DVC, so two runs must write the same bytes (:func:`dump_json`:
sorted keys, fixed indent) and a crash must never leave a half-written file or folder behind
(:func:`write_text_atomic`, :func:`atomic_dir`). This module is the one writer of both; it
imports nothing heavy, so the config commands that use it stay quick. Reading JSON with a
one-line error naming the file is :func:`graphqa.contract.read_json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def dump_json(obj: Any) -> str:
    """Stable JSON text: sorted keys, fixed indent, trailing newline (byte-stable outputs)."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` in one step: write a sibling temp file, flush it to disk, rename it.

    Readers (and DVC) never see a half-written file, and a crash leaves the old one. An
    existing file keeps its permissions; a new one gets ``0o644``.

    Args:
        path: the file to (re)write; missing parent folders are created.
        text: its whole new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write :func:`dump_json` text atomically (:func:`write_text_atomic`).

    Args:
        path: the JSON file to (re)write.
        obj: any JSON-serialisable object.
    """
    write_text_atomic(path, dump_json(obj))


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Write a folder's contents in a temporary sibling and swap it in only on success.

    A failing stage therefore leaves either the previous complete folder or none at all.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the swapped-in folder should not be
    try:
        yield tmp
    except BaseException:
        _rmtree(tmp)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        _rmtree(old)
    else:
        os.replace(tmp, final)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
