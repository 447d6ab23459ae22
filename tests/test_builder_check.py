"""``graphqa check-graphs``: one [OK]/[MISSING]/[INVALID] line per builder sidecar (seed 003)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from graphqa.cli import main

from .conftest import BUILDER_SAMPLE

FIXTURE = BUILDER_SAMPLE
SIDECARS = [
    "topology_columns.json",
    "node_columns.json",
    "edge_columns.json",
    "graph_manifest.json",
    "graph_metadata.json",
    "graph_builder_summary.json",
]


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-graphs", str(path)])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("sub", ["", "graph_data"], ids=["build_dir", "graph_data"])
def test_fixture_is_all_ok(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _check(FIXTURE / sub, capsys)

    assert code == 0
    assert lines[0] == f"graph folder: {FIXTURE / 'graph_data'}"
    assert lines[1:] == [f"[OK] {name}" for name in SIDECARS]


def test_embedded_dataset_is_all_ok(tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _check(tiny_dataset, capsys)

    assert code == 0
    assert lines[1:] == [f"[OK] {name}" for name in SIDECARS]


def _edit_json(path: Path, edit: Callable[[object], object]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _remove(name: str) -> Callable[[Path], None]:
    return lambda root: (root / "graph_data" / name).unlink()


def _extra_node_column(root: Path) -> None:
    _edit_json(root / "graph_data" / "node_columns.json", lambda cols: [*cols, "extra"])


def _topology_not_tail(root: Path) -> None:
    _edit_json(root / "graph_data" / "topology_columns.json", lambda cols: ["ID", *cols[:0:-1]])


def _topology_without_id(root: Path) -> None:
    _edit_json(root / "graph_data" / "topology_columns.json", lambda cols: cols[1:])


def _unlisted_graph(root: Path) -> None:
    shutil.copyfile(root / "graph_data/1ABC/1abc_1.pt", root / "graph_data/1ABC/1abc_9.pt")


def _listed_graph_gone(root: Path) -> None:
    (root / "graph_data/2XYZ/2xyz_3.pt").unlink()


def _metadata_dim_wrong(root: Path) -> None:
    def edit(meta: dict) -> dict:
        meta["_edge_schema"]["dim"] = 5
        return meta

    _edit_json(root / "graph_data" / "graph_metadata.json", edit)


def _metadata_not_json(root: Path) -> None:
    (root / "graph_data" / "graph_metadata.json").write_text("{not json")


def _summary_dims_wrong(root: Path) -> None:
    def edit(summary: dict) -> dict:
        summary["feature_dims"]["node_feature_dim"] = 8
        return summary

    _edit_json(root / "graph_builder_summary.json", edit)


BROKEN: list[tuple[Callable[[Path], None], str, str]] = [
    (_remove("topology_columns.json"), "[MISSING] topology_columns.json", ""),
    (_remove("node_columns.json"), "[MISSING] node_columns.json", ""),
    (_remove("edge_columns.json"), "[MISSING] edge_columns.json", ""),
    (_remove("graph_manifest.json"), "[MISSING] graph_manifest.json", ""),
    (_remove("graph_metadata.json"), "[MISSING] graph_metadata.json", ""),
    (_extra_node_column, "[INVALID] node_columns.json", "8 columns"),
    (_topology_not_tail, "[INVALID] topology_columns.json", "tail of node_columns.json"),
    (_topology_without_id, "[INVALID] topology_columns.json", '"ID"'),
    (_unlisted_graph, "[INVALID] graph_manifest.json", "1ABC/1abc_9.pt"),
    (_listed_graph_gone, "[INVALID] graph_manifest.json", "2XYZ/2xyz_3.pt"),
    (_metadata_dim_wrong, "[INVALID] graph_metadata.json", "_edge_schema.dim"),
    (_metadata_not_json, "[INVALID] graph_metadata.json", "Expecting"),
    (_summary_dims_wrong, "[INVALID] graph_builder_summary.json", "node_feature_dim"),
]


@pytest.mark.parametrize(
    ("breakage", "status", "why"),
    BROKEN,
    ids=[f"{s.split()[1]}-{i}" for i, (_, s, _) in enumerate(BROKEN)],
)
def test_broken_copy_is_flagged_and_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    breakage: Callable[[Path], None],
    status: str,
    why: str,
) -> None:
    root = Path(shutil.copytree(FIXTURE, tmp_path / "build"))
    breakage(root)

    code, lines = _check(root, capsys)

    assert code == 1
    flagged = [line for line in lines[1:] if not line.startswith("[OK]")]
    assert len(flagged) == 1, lines
    assert flagged[0].startswith(status)
    assert why in flagged[0]


def test_absent_summary_is_optional(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(shutil.copytree(FIXTURE, tmp_path / "build"))
    (root / "graph_builder_summary.json").unlink()

    code, lines = _check(root, capsys)

    assert code == 0
    assert lines[-1] == "[MISSING] graph_builder_summary.json (optional)"


def test_missing_build_dir_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-graphs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
