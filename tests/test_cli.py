"""The `graphqa` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphqa.cli import main

from .conftest import REPO


def test_config_prints_validated_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--params", str(REPO / "params.yaml"), "--section", "optimizer",
                 "-S", "optimizer.learning_rate=0.002"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("optimizer:") and "learning_rate: 0.002" in out


def test_config_rejects_misspelt_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--params", str(REPO / "params.yaml"),
                 "-S", "optimizer.learning_rat=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.learning_rat" in err and "learning_rate" in err


def test_summarise_reports_best_checkpoint(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch004.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "best.ckpt").symlink_to("epoch004.ckpt")
    (run / "summary.json").write_text(json.dumps({
        "best_selection_metric": -0.9, "best_epoch": 4, "checkpoint": "checkpoints/best.ckpt",
        "metrics": {"val_loss": 0.01}, "schema": {"node_dim": 172}}))
    assert main(["summarise", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best_epoch"] == 4 and out["checkpoint_file"] == "epoch004.ckpt"
    assert out["schema"]["node_dim"] == 172
    assert main(["summarise", str(tmp_path / "missing")]) == 2
