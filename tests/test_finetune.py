"""Selection -> fine-tune phases -> final selection on the tiny profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphqa.config import Params, parse_params
from graphqa.finetune import finetune_run
from graphqa.select import select_final, select_sweep
from graphqa.train import load_module, train_run

from .conftest import TINY_OVERRIDES

SWEEP = {
    **TINY_OVERRIDES,
    "trainer.max_epochs": 1,
    "sweep.seeds": [0, 1],
    "finetune.phase1.overrides": {"optimizer.learning_rate": 0.0005, "trainer.max_epochs": 2},
    "finetune.phase2.seeds": [101],
    "finetune.phase2.overrides": {"trainer.max_epochs": 1},
}


@pytest.fixture(scope="module")
def sweep(tiny_schema_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    params = parse_params({}, SWEEP)
    for seed in params.sweep.seeds:
        member = parse_params({}, {**SWEEP, "dataloader.seed": seed})
        train_run(params=member, schema_dir=tiny_schema_dir, run_dir=root / f"train/{seed}-base")
    select_sweep(params=params, train_root=root / "train", out_dir=root / "selection")
    return params, root


def test_selection_records_winner_and_leaderboard(sweep: tuple[Params, Path]) -> None:
    _, root = sweep
    selection = json.loads((root / "selection" / "selection.json").read_text())
    assert selection["winner"] in {"train/0-base", "train/1-base"}
    assert Path(selection["checkpoint"]).exists()
    scores = [r["metrics"]["selection_metric"] for r in selection["ranked"]]
    assert scores == sorted(scores)
    lines = (root / "selection" / "leaderboard.csv").read_text().splitlines()
    assert lines[0].startswith("rank,name,selection_metric") and len(lines) == 3
    metrics = json.loads((root / "selection" / "metrics.json").read_text())
    assert metrics["sweep_selection_metric"] == pytest.approx(scores[0])


def test_phases_resume_winner_weights_and_final_selection_picks_best(
    sweep: tuple[Params, Path], tiny_schema_dir: Path
) -> None:
    params, root = sweep
    phase1 = finetune_run(
        params=params,
        phase=1,
        seed=None,
        selection_dir=root / "selection",
        phase1_dir=root / "ft1",
        schema_dir=tiny_schema_dir,
        out_dir=root / "ft1",
    )
    selection = json.loads((root / "selection" / "selection.json").read_text())
    assert phase1["init_from"] == Path(selection["checkpoint"]).as_posix()
    assert phase1["params"]["optimizer"]["learning_rate"] == 0.0005  # phase override
    assert phase1["metrics"]["epochs_trained"] == 2
    # Fine-tuning starts from the winner's weights, standardiser statistics included.
    winner = load_module(selection["checkpoint"]).net
    tuned = load_module(root / "ft1" / "checkpoints" / "last.ckpt").net
    assert torch.equal(winner.node_norm.mean, tuned.node_norm.mean)

    p2 = parse_params({}, {**SWEEP, "finetune.phase2.resume_from": "phase1_best"})
    phase2 = finetune_run(
        params=p2,
        phase=2,
        seed=101,
        selection_dir=root / "selection",
        phase1_dir=root / "ft1",
        schema_dir=tiny_schema_dir,
        out_dir=root / "ft2" / "101",
    )
    assert phase2["init_from"].endswith("ft1/checkpoints/best.ckpt")
    assert phase2["seed"] == 101

    final = select_final(
        params=params,
        selection_dir=root / "selection",
        finetune_dirs={
            "finetune_phase1": root / "ft1",
            "finetune_phase2/101": root / "ft2" / "101",
        },
        out_dir=root / "final",
    )
    names = [r["name"] for r in final["ranked"]]
    assert sorted(names) == sorted([selection["winner"], "finetune_phase1", "finetune_phase2/101"])
    best = min(final["ranked"], key=lambda r: r["metrics"]["selection_metric"])
    assert final["winner"] == best["name"] and final["reason"].startswith(best["name"])
    assert (root / "final" / "model.ckpt").read_bytes() == (
        Path(best["run_dir"]) / "checkpoints" / "best.ckpt"
    ).read_bytes()


def test_disabled_finetune_skips_cleanly_and_sweep_winner_goes_on(
    sweep: tuple[Params, Path], tiny_schema_dir: Path
) -> None:
    _, root = sweep
    off = parse_params({}, {**SWEEP, "finetune.enabled": False})
    out = root / "ft_off"
    summary = finetune_run(
        params=off,
        phase=1,
        seed=None,
        selection_dir=root / "selection",
        phase1_dir=out,
        schema_dir=tiny_schema_dir,
        out_dir=out,
    )
    assert summary["skipped"] is True
    assert not list((out / "checkpoints").glob("*.ckpt"))
    final = select_final(
        params=off,
        selection_dir=root / "selection",
        finetune_dirs={"finetune_phase1": out},
        out_dir=root / "final_off",
    )
    selection = json.loads((root / "selection" / "selection.json").read_text())
    assert final["winner"] == selection["winner"]
    assert [r["name"] for r in final["ranked"]] == [selection["winner"]]
