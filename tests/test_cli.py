"""The `graphqa` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graphqa.cli import main

from .conftest import BUILDER_SAMPLE, REPO


def test_config_prints_validated_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "config",
                "--params",
                str(REPO / "params.yaml"),
                "--section",
                "optimizer",
                "-S",
                "optimizer.learning_rate=0.002",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("optimizer:") and "learning_rate: 0.002" in out


def test_config_rejects_misspelt_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["config", "--params", str(REPO / "params.yaml"), "-S", "optimizer.learning_rat=0.1"])
        == 2
    )
    err = capsys.readouterr().err
    assert "optimizer.learning_rat" in err and "learning_rate" in err


def test_summarise_reports_best_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch004.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "best.ckpt").symlink_to("epoch004.ckpt")
    (run / "summary.json").write_text(
        json.dumps(
            {
                "best_selection_metric": -0.9,
                "best_epoch": 4,
                "checkpoint": "checkpoints/best.ckpt",
                "metrics": {"val_loss": 0.01},
                "schema": {"node_dim": 172},
            }
        )
    )
    assert main(["summarise", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best_epoch"] == 4 and out["checkpoint_file"] == "epoch004.ckpt"
    assert out["schema"]["node_dim"] == 172
    assert main(["summarise", str(tmp_path / "missing")]) == 2


def test_leaderboard_ranks_finished_runs(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_root = tiny_run.parents[1]
    assert (
        main(
            [
                "leaderboard",
                "--runs",
                str(runs_root),
                "--params",
                str(REPO / "params.yaml"),
                "--json",
                "--limit",
                "5",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert rows[0]["run"] == "train/0-base" and rows[0]["rank"] == 1
    assert rows[0]["selection_metric"] == summary["metrics"]["selection_metric"]
    assert main(["leaderboard", "--runs", str(runs_root), "--metric", "val_loss"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "run", "val_loss"]


def test_monitor_reports_best_checkpoint_and_learning_params(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", str(tiny_run), "--follow", "--interval", "0"]) == 0  # finished
    snap = json.loads(capsys.readouterr().out)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert snap["status"] == "finished" and snap["epochs_done"] == 2
    assert snap["best_epoch"] == summary["best_epoch"]
    assert Path(snap["checkpoint"]).name == f"epoch{summary['best_epoch']:03d}.ckpt"
    assert (
        snap["learning"]["optimizer"]["learning_rate"]
        == summary["params"]["optimizer"]["learning_rate"]
    )


def test_monitor_tracks_a_run_in_progress(tmp_path: Path) -> None:
    """Scripted metrics.csv of a live run: best moves as better epochs arrive."""
    from graphqa.cli import monitor_snapshot

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    header = "epoch,val_loss,val_spearman,selection_metric,lr\n"
    (run / "metrics.csv").write_text(header + "0,0.05,0.5,-0.45,0.003\n")
    (run / "checkpoints" / "epoch000.ckpt").write_bytes(b"x")
    first = monitor_snapshot(run)
    assert (first["best_epoch"], first["status"]) == (0, "unknown")
    (run / "metrics.csv").write_text(
        header + "0,0.05,0.5,-0.45,0.003\n1,0.04,0.7,-0.66,0.003\n2,0.06,0.4,-0.34,0.0012\n"
    )
    (run / "checkpoints" / "epoch001.ckpt").write_bytes(b"x")
    later = monitor_snapshot(run)
    assert later["best_epoch"] == 1 and later["epochs_done"] == 3
    assert later["checkpoint"].endswith("epoch001.ckpt") and later["current_lr"] == 0.0012


def test_resume_command_refuses_a_folder_without_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resume", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# graphqa validate: the graph builder's validator


BUILDER_GRAPHS = BUILDER_SAMPLE / "graph_data"


def _graphs_copy(tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(BUILDER_GRAPHS, tmp_path / "graph_data"))


def _validate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_accepts_the_builder_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _validate([str(BUILDER_GRAPHS), "--workers", "2"], capsys)

    assert code == 0
    assert out.splitlines() == [
        f"OK: 9 graphs verified against {BUILDER_GRAPHS / 'graph_manifest.json'} "
        "(x 9, edge_index 9, edge_attr 9, metadata 9)"
    ]
    assert err == ""


def test_validate_write_manifest_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _graphs_copy(tmp_path)
    written = tmp_path / "out" / "manifest.json"

    code, out, _ = _validate([str(root), "--write-manifest", "--manifest", str(written)], capsys)

    assert code == 0 and out.startswith("OK: 9 graphs wrote")
    assert written.read_bytes() == (BUILDER_GRAPHS / "graph_manifest.json").read_bytes()
    assert _validate([str(root), "--manifest", str(written)], capsys)[0] == 0
    assert _validate([str(root), "--write-manifest", "--ignore-metadata"], capsys)[0] == 0
    entries = json.loads((root / "graph_manifest.json").read_text())
    assert all("metadata" not in e for e in entries.values())
    assert _validate([str(root)], capsys)[0] == 0


def _resave(root: Path, mutate: Any) -> Path:
    from graphqa.contract import load_graph, save_graph

    path = root / "2XYZ" / "2xyz_2.pt"
    data = load_graph(path)
    mutate(data)
    save_graph(data, path)
    return path


def _set(name: str, value: Any) -> Any:
    return lambda data: setattr(data, name, value(data))


def _payload(root: Path) -> Path:
    import torch

    from graphqa.contract import load_graph

    from .test_schema import _Payload

    path = root / "2XYZ" / "2xyz_2.pt"
    data = load_graph(path)
    data.payload = _Payload(root / "marker.txt")
    torch.save(data, path)
    return path


def _garbage(root: Path) -> Path:
    path = root / "2XYZ" / "2xyz_2.pt"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _nan(data: Any) -> None:
    data.x[1, 1] = float("nan")


def _inf(data: Any) -> None:
    data.edge_attr[0, 0] = float("inf")


BAD_GRAPHS: list[tuple[str, Any, str]] = [
    ("truncated", _garbage, "<file>"),
    ("pickle_payload", _payload, "<file>"),
    ("wrong_dims", lambda r: _resave(r, _set("x", lambda d: d.x[:, :6].clone())), "x"),
    ("nan", lambda r: _resave(r, _nan), "x"),
    ("inf", lambda r: _resave(r, _inf), "edge_attr"),
    (
        "edge_index_range",
        lambda r: _resave(r, _set("edge_index", lambda d: d.edge_index + 50)),
        "edge_index",
    ),
    ("edge_rows", lambda r: _resave(r, _set("edge_attr", lambda d: d.edge_attr[1:])), "edge_attr"),
    ("empty", lambda r: _resave(r, _set("x", lambda d: d.x[:0])), "x"),
]


@pytest.mark.parametrize("write", [False, True], ids=["verify", "write"])
@pytest.mark.parametrize(
    ("breakage", "key"), [b[1:] for b in BAD_GRAPHS], ids=[b[0] for b in BAD_GRAPHS]
)
def test_validate_names_a_bad_graph_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: Any, key: str, write: bool
) -> None:
    root = _graphs_copy(tmp_path)
    manifest_before = (root / "graph_manifest.json").read_bytes()
    path = breakage(root)

    code, out, err = _validate([str(root), *(["--write-manifest"] if write else [])], capsys)

    assert code == 1 and out == ""
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}: '{key}': expected")
    assert lines[1].startswith("FAILED: 1 problem(s) in 1 graph(s)")
    assert (root / "graph_manifest.json").read_bytes() == manifest_before  # never half-written
    assert not (root / "marker.txt").exists()


def test_validate_refuses_changed_values_until_rehashed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _graphs_copy(tmp_path)
    path = _resave(root, lambda d: d.edge_attr.mul_(2))

    code, _, err = _validate([str(root), "--ignore-metadata"], capsys)

    assert code == 1
    assert err.splitlines()[0].startswith(f"{path}: 'edge_attr': expected sha256")
    assert _validate([str(root), "--write-manifest"], capsys)[0] == 0  # a deliberate re-hash
    assert _validate([str(root)], capsys)[0] == 0


def test_validate_lists_only_the_first_mismatches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = _graphs_copy(tmp_path)
    for i in range(12):
        shutil.copyfile(root / "1ABC" / "1abc_1.pt", root / "1ABC" / f"1abc_extra{i:02d}.pt")

    code, _, err = _validate([str(root)], capsys)

    lines = err.splitlines()
    assert code == 1
    assert len(lines) == 12 and lines[10] == "... and 2 more"
    assert lines[11].startswith("FAILED: 12 problem(s) in 12 graph(s)")


@pytest.mark.parametrize("case", ["no_folder", "sidecar_not_json", "no_manifest"])
def test_validate_bad_folder_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    root = _graphs_copy(tmp_path)
    if case == "no_folder":
        root, culprit = tmp_path / "nope", "paths.graph_dir"
    elif case == "sidecar_not_json":
        (root / "graph_metadata.json").write_text("{")
        culprit = "graph_metadata.json: '<file>'"
    else:
        (root / "graph_manifest.json").unlink()
        culprit = "--write-manifest"

    code, _, err = _validate([str(root)], capsys)

    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("graphqa: error: ")
    assert culprit in err
