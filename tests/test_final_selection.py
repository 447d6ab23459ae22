"""Final selection by evidence, on scripted val predictions: a fine-tune replaces the sweep
winner only when it is better on the val targets beyond the noise, whatever its point metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import graphqa.final_selection as final_selection
from graphqa.config import parse_params
from graphqa.data import PackedSplit
from graphqa.final_selection import final_selection_stage

N_TARGETS, PER_TARGET = 8, 5
RNG = np.random.default_rng(0)
TRUE = RNG.uniform(0, 1, N_TARGETS * PER_TARGET)
TARGETS = [f"T{t:02d}" for t in range(N_TARGETS) for _ in range(PER_TARGET)]
NOISY = np.clip(TRUE + RNG.normal(0, 0.25, TRUE.size), 0.01, 0.99)


def packed_val(path: Path) -> None:
    """A val split with the targets and labels that matter here (features are never read:
    predictions are scripted)."""
    n = len(TRUE)
    PackedSplit(
        keys=[f"{t}/m{i}" for i, t in enumerate(TARGETS)],
        models=[f"{t}_m{i}" for i, t in enumerate(TARGETS)],
        targets=TARGETS,
        capri=["Incorrect"] * n,
        x=torch.zeros(n, 1),
        edge_index=torch.zeros(2, 0, dtype=torch.int64),
        edge_attr=torch.zeros(0, 1),
        node_ptr=torch.arange(n + 1),
        edge_ptr=torch.zeros(n + 1, dtype=torch.int64),
        y=torch.tensor(TRUE, dtype=torch.float32),
    ).save(path)


def run_folder(run: Path, weights: str, selection_metric: float, ckpt: str = "best") -> None:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / f"{ckpt}.ckpt").write_text(weights)
    metrics = {"selection_metric": selection_metric, "val_loss": 0.05, "val_spearman": 0.5}
    summary = {"status": "finished", "seed": 0, "metrics": metrics}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "feature_metadata.json").write_text("{}")


@pytest.fixture()
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Sweep winner (noisy predictions, selection_metric -0.5) and two fine-tunes whose
    predictions each test scripts; a checkpoint file holds the name of its predictions."""
    (tmp_path / "schema" / "packed").mkdir(parents=True)
    packed_val(tmp_path / "schema" / "packed" / "val.pt")
    winner = tmp_path / "selection" / "winner"
    run_folder(winner, "sweep", -0.5)
    (winner / "checkpoints" / "best.ckpt").rename(winner / "model.ckpt")
    (tmp_path / "selection" / "selection.json").write_text(json.dumps({"winner": "train/0-base"}))
    predictions = {"sweep": NOISY}

    def scripted(checkpoint: str | Path, split: PackedSplit) -> np.ndarray:
        assert split.targets == TARGETS
        return predictions[Path(checkpoint).read_text()]

    monkeypatch.setattr(final_selection, "split_predictions", scripted)
    return {"root": tmp_path, "predictions": predictions}


def run_final(layout: dict[str, Any], primary: str = "selection_metric") -> dict[str, Any]:
    root = layout["root"]
    return final_selection_stage(
        params=parse_params({}, {"selection.primary_metric": primary}),
        selection_dir=root / "selection",
        finetune_dirs={"finetune_phase1": root / "ft1", "finetune_phase2/101": root / "ft2"},
        schema_dir=root / "schema",
        out_dir=root / "final",
    )


def test_fine_tune_better_on_every_target_is_adopted(layout: dict[str, Any]) -> None:
    root = layout["root"]
    layout["predictions"].update(ft1=TRUE.copy(), ft2=NOISY + 1e-4)
    run_folder(root / "ft1", "ft1", -0.6)
    run_folder(root / "ft2", "ft2", -0.9)  # best point value, no real difference
    final = run_final(layout)
    assert final["winner"] == "finetune_phase1"
    evidence = {e["candidate"]: e for e in final["evidence"]}
    assert evidence["finetune_phase1"]["adopted"] and evidence["finetune_phase1"]["ci"][1] < 0
    assert not evidence["finetune_phase2/101"]["adopted"]
    assert evidence["finetune_phase1"]["n_targets"] == N_TARGETS
    assert final["reason"].startswith("finetune_phase1: beats the sweep winner train/0-base")
    assert (root / "final" / "winner" / "model.ckpt").read_text() == "ft1"
    on_disk = json.loads((root / "final" / "selection.json").read_text())
    assert on_disk["evidence"] == final["evidence"] and on_disk["reference"] == "train/0-base"


def test_better_point_metric_without_evidence_keeps_the_sweep_winner(
    layout: dict[str, Any],
) -> None:
    root = layout["root"]
    jitter = RNG.normal(0, 0.01, TRUE.size)  # the same model, give or take
    layout["predictions"].update(ft1=NOISY + jitter, ft2=NOISY - jitter)
    run_folder(root / "ft1", "ft1", -0.7)  # both "beat" -0.5 on the point value
    run_folder(root / "ft2", "ft2", -0.8)
    final = run_final(layout)
    assert final["winner"] == "train/0-base"
    assert "the sweep winner stays" in final["reason"]
    assert [r["name"] for r in final["ranked"]] == [
        "train/0-base",
        "finetune_phase2/101",
        "finetune_phase1",
    ]
    for e in final["evidence"]:
        low, high = e["ci"]
        assert not e["adopted"] and low < 0 < high
    assert (root / "final" / "winner" / "model.ckpt").read_text() == "sweep"


def test_ranking_metric_compares_per_target_spearman(layout: dict[str, Any]) -> None:
    root = layout["root"]
    # ft1 ranks every target's models perfectly but is badly offset (worse squared error).
    layout["predictions"].update(ft1=TRUE * 0.2 + 0.7, ft2=NOISY.copy())
    run_folder(root / "ft1", "ft1", 0.0)
    run_folder(root / "ft2", "ft2", 0.0)
    final = run_final(layout, "val_spearman")
    first = final["evidence"][0]
    assert first["candidate"] == "finetune_phase1" and first["direction"] == "max"
    assert first["per_target"] == "per-target Spearman" and first["adopted"]
    assert final["winner"] == "finetune_phase1"
    loss = run_final(layout, "val_loss")  # by squared error the offset model is worse
    assert loss["winner"] == "train/0-base"


def test_averaged_fine_tune_is_weighed_and_ships_its_checkpoint(layout: dict[str, Any]) -> None:
    root = layout["root"]
    layout["predictions"].update(ft1=NOISY.copy(), ft1_avg=TRUE.copy(), ft2=NOISY.copy())
    run_folder(root / "ft1", "ft1", -0.5)
    run_folder(root / "ft2", "ft2", -0.5)
    (root / "ft1" / "checkpoints" / "averaged.ckpt").write_text("ft1_avg")
    summary = json.loads((root / "ft1" / "summary.json").read_text())
    summary["averaged"] = {
        "checkpoint": "checkpoints/averaged.ckpt",
        "metrics": {"ema_selection_metric": -0.6, "ema_val_loss": 0.04},
    }
    (root / "ft1" / "summary.json").write_text(json.dumps(summary))
    final = run_final(layout)
    assert final["winner"] == "finetune_phase1:averaged"
    assert (root / "final" / "winner" / "model.ckpt").read_text() == "ft1_avg"
    board = list(csv.DictReader((root / "final" / "leaderboard.csv").open()))
    assert board[0]["name"] == "finetune_phase1:averaged"
    assert board[0]["variant"] == "finetune_phase1:averaged"  # its own variant
    assert {r["variant"] for r in board} >= {"sweep_winner", "finetune_phase1"}
