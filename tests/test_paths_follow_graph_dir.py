"""Issue 21: pointing ``paths.graph_dir`` (and the labels) at a graph builder's output is enough.

``paths.metadata_path`` and ``paths.summary_path`` are null in ``params.yaml`` and follow the
graph folder: the schema stage reads ``<graph_dir>/graph_metadata.json`` and the builder's
``graph_builder_summary.json`` beside it, and dvc.yaml's ``schema`` stage declares exactly those
(the graph folder and ``${paths.graph_dir}/../graph_builder_summary.json``). A path set
explicitly still wins. The stage runs as DVC runs it (``stages/schema.py`` in a subprocess) on a
copy of the reference builder sample, whose schema (7 node columns) is not the embedded one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from graphqa.config import apply_overrides

from .conftest import BUILDER_SAMPLE, REPO

SAMPLE = BUILDER_SAMPLE
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is not here")
SPLITS = ("train", "val", "val_calib", "test", "tuning")
SUMMARY_DEP = "${paths.graph_dir}/../graph_builder_summary.json"


def _repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _schema_stage_block() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["schema"]


def _sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the builder sample: ``graph_data/`` and the summary beside it."""
    root = Path(shutil.copytree(SAMPLE, tmp_path / "build"))
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return root


def _label_overrides(tmp_path: Path, labels: Path, targets: tuple[str | None, ...]) -> dict:
    """``paths.<split>_labels`` for the label rows of one target per split (None: header-only)."""
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    prefix = frame["MODEL"].str.split("_").str[0].str.lower()
    out = tmp_path / "labels"
    out.mkdir(exist_ok=True)
    overrides = {}
    for split, target in zip(SPLITS, targets, strict=True):
        path = out / f"{split}.csv"
        frame[prefix == target].to_csv(path, index=False)
        overrides[f"paths.{split}_labels"] = str(path)
    return overrides


def _sample_overrides(tmp_path: Path, root: Path) -> dict[str, Any]:
    """Only the graph folder and the label files: what a user of the seeds changes."""
    labels = _label_overrides(tmp_path, root / "labels.csv", ("1abc", "2xyz", "3pqr", None, None))
    return {"paths.graph_dir": str(root / "graph_data"), **labels}


def _write_params(path: Path, overrides: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = apply_overrides(_repo_params(), overrides)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _stage(params: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``stages/schema.py`` as DVC runs it, on ``params``."""
    return subprocess.run(
        [sys.executable, "stages/schema.py", "--params", str(params), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ok(params: Path, out: Path) -> tuple[dict[str, Any], str]:
    proc = _stage(params, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "feature_metadata.json").read_text()), proc.stdout


def _read_line(stdout: str, what: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith(f"schema: {what}: ")]
    return line.removeprefix(f"schema: {what}: ")


_RESOLVE_DEPS = """
import json, os, shutil, sys
from dvc.repo import Repo
root, dvc_yaml, params = sys.argv[1:4]
os.makedirs(root)
shutil.copy(dvc_yaml, os.path.join(root, "dvc.yaml"))
shutil.copy(params, os.path.join(root, "params.yaml"))
Repo.init(root, no_scm=True)
os.chdir(root)
with Repo(root) as repo:
    (stage,) = repo.stage.collect("schema")
    print(json.dumps([os.path.abspath(d.fs_path) for d in stage.deps]))
"""


def _declared_deps(tmp_path: Path, params: Path) -> tuple[Path, list[str]]:
    """The schema stage's deps as DVC resolves them against ``params`` (absolute paths), in a
    throwaway DVC repo holding this checkout's dvc.yaml."""
    root = tmp_path / "dvcrepo"
    home = tmp_path / "dvchome"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(
        {
            "DVC_NO_ANALYTICS": "1",
            "DVC_GLOBAL_CONFIG_DIR": str(home / "global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "system"),
            "DVC_SITE_CACHE_DIR": str(home / "site"),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE_DEPS, str(root), str(REPO / "dvc.yaml"), str(params)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, json.loads(proc.stdout.strip().splitlines()[-1])


def _covered(path: str, deps: list[str]) -> bool:
    full = os.path.abspath(path)
    return any(full == d or full.startswith(d + os.sep) for d in deps)


# --------------------------------------------------------------------------------------------
# params.yaml and dvc.yaml


def test_default_params_leave_metadata_and_summary_to_the_graph_folder() -> None:
    paths = _repo_params()["paths"]
    assert "metadata_path" in paths and paths["metadata_path"] is None
    assert "summary_path" in paths and paths["summary_path"] is None
    deps = _schema_stage_block()["deps"]
    assert "${paths.graph_dir}" in deps and SUMMARY_DEP in deps
    # null cannot be a DVC dep: neither key may be templated into the stage
    assert not [d for d in deps if "paths.metadata_path" in d or "paths.summary_path" in d]
    assert "paths" in _schema_stage_block()["params"]


def test_dvc_declares_the_default_sidecars_where_the_stage_reads_them(tmp_path: Path) -> None:
    params = _write_params(tmp_path / "params" / "params.yaml", {})
    root, deps = _declared_deps(tmp_path, params)
    assert str(root / "data/dataset/graphs") in deps
    assert str(root / "data/dataset/graph_builder_summary.json") in deps
    assert not [d for d in deps if d.endswith("graph_metadata.json")]  # inside graph_dir


# --------------------------------------------------------------------------------------------
# The stage on a builder's output


@needs_sample
def test_changing_only_graph_dir_reads_that_folders_metadata_and_summary(tmp_path: Path) -> None:
    root = _sample_copy(tmp_path)
    params = _write_params(tmp_path / "params.yaml", _sample_overrides(tmp_path, root))

    meta, stdout = _ok(params, tmp_path / "schema")

    # The sample's own schema and builder facts, not the embedded dataset's (175 node columns).
    sample_meta = json.loads((root / "graph_data/graph_metadata.json").read_text())
    sample_summary = json.loads((root / "graph_builder_summary.json").read_text())
    assert meta["source"] == "graph_metadata.json"
    assert meta["node"]["columns"] == sample_meta["_node_schema"]["columns"]
    assert (meta["node"]["dim"], meta["edge"]["dim"], meta["topology"]["dim"]) == (7, 4, 4)
    assert meta["builder"]["id"] == "graph_builder2"
    assert meta["builder_summary"]["feature_dims"] == sample_summary["feature_dims"]
    assert meta["builder_summary"]["builder"] == {"id": "graph_builder2", "version": "2.0.0"}
    assert meta["builder_summary"]["edge"]["processed"] == 9

    # What it read is what DVC declares for these params, with no note about untracked files.
    read_meta = _read_line(stdout, "metadata")
    read_summary = _read_line(stdout, "builder summary")
    assert Path(read_meta) == root / "graph_data" / "graph_metadata.json"
    assert Path(read_summary).resolve() == (root / "graph_builder_summary.json").resolve()
    assert "note:" not in stdout
    _, deps = _declared_deps(tmp_path, params)
    assert str(root / "graph_data") in deps
    assert str(root / "graph_builder_summary.json") in deps
    assert _covered(read_meta, deps) and _covered(read_summary, deps)
    assert not [d for d in deps if "data/dataset" in d]  # nothing of the embedded dataset


@needs_sample
def test_an_explicit_metadata_path_and_summary_path_still_win(tmp_path: Path) -> None:
    root = _sample_copy(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    meta_file = elsewhere / "meta.json"
    meta = json.loads((root / "graph_data/graph_metadata.json").read_text())
    meta["_builder"]["version"] = "2.0.0-explicit"
    meta_file.write_text(json.dumps(meta))
    summary_file = elsewhere / "graph_builder_summary.json"
    summary = json.loads((root / "graph_builder_summary.json").read_text())
    summary["builder"]["version"] = "9.9.9"
    summary_file.write_text(json.dumps(summary))
    explicit = {"paths.metadata_path": str(meta_file), "paths.summary_path": str(elsewhere)}
    params = _write_params(
        tmp_path / "params.yaml", {**_sample_overrides(tmp_path, root), **explicit}
    )

    out, stdout = _ok(params, tmp_path / "schema")

    assert out["builder"]["version"] == "2.0.0-explicit"  # not the graph folder's sidecar
    assert out["builder_summary"]["builder"]["version"] == "9.9.9"  # not the one beside it
    assert Path(_read_line(stdout, "metadata")) == meta_file
    assert Path(_read_line(stdout, "builder summary")) == summary_file
    # DVC does not declare a file outside the graph folder: the stage says so, per file.
    notes = [line for line in stdout.splitlines() if line.startswith("schema: note: ")]
    assert len(notes) == 2
    assert "paths.metadata_path" in notes[0] and str(meta_file) in notes[0]
    assert "paths.summary_path" in notes[1] and str(summary_file) in notes[1]
    assert all("dvc.yaml" in note for note in notes)


@needs_sample
def test_an_explicit_path_inside_the_graph_folder_is_tracked_without_a_note(
    tmp_path: Path,
) -> None:
    root = _sample_copy(tmp_path)
    moved = root / "graph_data" / "graph_builder_summary.json"
    shutil.copy(root / "graph_builder_summary.json", moved)
    explicit = {
        "paths.metadata_path": str(root / "graph_data"),  # a folder to look in
        "paths.summary_path": str(moved),
    }
    params = _write_params(
        tmp_path / "params.yaml", {**_sample_overrides(tmp_path, root), **explicit}
    )

    out, stdout = _ok(params, tmp_path / "schema")

    assert out["node"]["dim"] == 7 and out["builder_summary"]["builder"]["id"] == "graph_builder2"
    assert Path(_read_line(stdout, "builder summary")) == moved
    assert "note:" not in stdout


@needs_sample
def test_a_missing_metadata_file_is_one_line_naming_where_it_looked(tmp_path: Path) -> None:
    root = _sample_copy(tmp_path)
    missing = tmp_path / "nowhere" / "graph_metadata.json"
    params = _write_params(
        tmp_path / "params.yaml",
        {**_sample_overrides(tmp_path, root), "paths.metadata_path": str(missing)},
    )

    proc = _stage(params, tmp_path / "schema")

    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"schema: error: {missing}: 'paths.metadata_path': expected ")
    assert "no such file" in line
    assert not (tmp_path / "schema").exists()


@needs_sample
def test_a_graph_folder_without_metadata_falls_back_to_the_graphs(tmp_path: Path) -> None:
    root = _sample_copy(tmp_path)
    (root / "graph_data" / "graph_metadata.json").unlink()
    params = _write_params(tmp_path / "params.yaml", _sample_overrides(tmp_path, root))

    out, stdout = _ok(params, tmp_path / "schema")

    assert out["source"] == "pt_inspection" and out["node"]["dim"] == 7
    assert _read_line(stdout, "metadata") == "none, read off the .pt files"


# --------------------------------------------------------------------------------------------
# The default pipeline reads what the old pinned defaults read


def test_null_paths_pack_the_same_bytes_as_the_old_pinned_ones(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    labels = {f"paths.{s}_labels": str(tiny_dataset / "labels" / f"{s}.csv") for s in SPLITS}
    follow = {"paths.graph_dir": str(tiny_dataset / "graphs"), **labels}
    pinned = {
        **follow,
        "paths.metadata_path": str(tiny_dataset / "graphs" / "graph_metadata.json"),
        "paths.summary_path": str(tiny_dataset / "graph_builder_summary.json"),
    }
    new, stdout = _ok(_write_params(tmp_path / "a" / "params.yaml", follow), tmp_path / "new")
    _ok(_write_params(tmp_path / "b" / "params.yaml", pinned), tmp_path / "old")

    assert new["builder_summary"] is not None and "note:" not in stdout
    files = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*.*"))
    assert files
    for rel in files:
        assert (tmp_path / "new" / rel).read_bytes() == (tmp_path / "old" / rel).read_bytes(), rel
