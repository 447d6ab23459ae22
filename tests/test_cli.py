"""The `graphqa` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphqa.cli import main

from .conftest import REPO


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
