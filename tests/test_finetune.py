"""Selection -> fine-tune phases -> final selection on the tiny profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphqa.config import Params, parse_params
from graphqa.final_selection import final_selection_stage
from graphqa.finetune import finetune_stage
from graphqa.model import build_net
from graphqa.module import load_module
from graphqa.selection import selection_stage
from graphqa.train import train_stage

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
        train_stage(params=member, schema_dir=tiny_schema_dir, run_dir=root / f"train/{seed}-base")
    selection_stage(params=params, train_root=root / "train", out_dir=root / "selection")
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


def test_phases_resume_winner_weights_and_final_selection_weighs_the_evidence(
    sweep: tuple[Params, Path], tiny_schema_dir: Path
) -> None:
    params, root = sweep
    phase1 = finetune_stage(
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
    phase2 = finetune_stage(
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

    final = final_selection_stage(
        params=params,
        selection_dir=root / "selection",
        finetune_dirs={
            "finetune_phase1": root / "ft1",
            "finetune_phase2/101": root / "ft2" / "101",
        },
        schema_dir=tiny_schema_dir,
        out_dir=root / "final",
    )
    names = {r["name"] for r in final["ranked"]}
    # Every fine-tuned run (and its averaged model, if it has one) is weighed against the
    # sweep winner, with the evidence on record.
    assert {"finetune_phase1", "finetune_phase2/101", selection["winner"]} <= names
    evidence = {e["candidate"]: e for e in final["evidence"]}
    assert set(evidence) == names - {selection["winner"]}
    for e in evidence.values():
        assert e["reference"] == selection["winner"] and e["metric"] == "selection_metric"
        lo, hi = e["ci"]
        assert lo is None or lo <= e["mean_diff"] <= hi
        assert e["adopted"] == (hi is not None and hi < 0)  # lower is better
    adopted = [name for name, e in evidence.items() if e["adopted"]]
    assert (final["winner"] in adopted) if adopted else (final["winner"] == selection["winner"])
    chosen = next(r for r in final["ranked"] if r["name"] == final["winner"])
    assert (root / "final" / "winner" / "model.ckpt").read_bytes() == (
        Path(chosen["checkpoint"]).read_bytes()
    )


def test_finetuning_starts_from_the_winners_weights(
    sweep: tuple[Params, Path], tiny_schema_dir: Path
) -> None:
    """With a vanishing learning rate a fine-tune must end where it started: at the winner's
    weights, not at a fresh initialisation (which differs by ~0.1 everywhere)."""
    _, root = sweep
    frozen = parse_params(
        {},
        {
            **SWEEP,
            "finetune.phase1.overrides": {
                "optimizer.learning_rate": 1e-12,
                "trainer.max_epochs": 1,
                "scheduler.type": "none",
            },
        },
    )
    finetune_stage(
        params=frozen,
        phase=1,
        seed=None,
        selection_dir=root / "selection",
        phase1_dir=root / "ft_frozen",
        schema_dir=tiny_schema_dir,
        out_dir=root / "ft_frozen",
    )
    winner = load_module(root / "selection" / "winner" / "model.ckpt").net.state_dict()
    tuned = load_module(root / "ft_frozen" / "checkpoints" / "last.ckpt").net.state_dict()
    fresh = build_net(load_module(root / "selection" / "winner" / "model.ckpt").net.config)
    assert winner.keys() == tuned.keys()
    learned = [k for k, v in winner.items() if v.is_floating_point() and "norm" not in k]
    assert learned
    for key in learned:
        assert torch.allclose(tuned[key], winner[key], atol=1e-8), key
    assert any(not torch.allclose(fresh.state_dict()[k], winner[k], atol=1e-3) for k in learned), (
        "the winner's weights are indistinguishable from a fresh initialisation"
    )


def test_disabled_finetune_skips_cleanly_and_sweep_winner_goes_on(
    sweep: tuple[Params, Path], tiny_schema_dir: Path
) -> None:
    _, root = sweep
    off = parse_params({}, {**SWEEP, "finetune.enabled": False})
    out = root / "ft_off"
    summary = finetune_stage(
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
    final = final_selection_stage(
        params=off,
        selection_dir=root / "selection",
        finetune_dirs={"finetune_phase1": out},
        schema_dir=tiny_schema_dir,
        out_dir=root / "final_off",
    )
    selection = json.loads((root / "selection" / "selection.json").read_text())
    assert final["winner"] == selection["winner"]
    assert [r["name"] for r in final["ranked"]] == [selection["winner"]]
    assert final["evidence"] == [] and "no fine-tuned run finished" in final["reason"]
