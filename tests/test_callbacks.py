"""Training callbacks: portable checkpoints, tuning-split scoring (by hand), metrics.csv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_geometric.data import Data

from graphqa.callbacks import TuningMetrics

from .test_metrics import TUNE_EXPECTED, TUNE_GROUPS, TUNE_PRED, TUNE_TRUE


def test_checkpoints_hold_no_absolute_paths(tiny_run: Path) -> None:
    checkpoints = sorted((tiny_run / "checkpoints").glob("epoch*.ckpt"))
    assert checkpoints, "the run wrote no epoch checkpoints to check"
    for ckpt in checkpoints:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        text = json.dumps(state["callbacks"], default=str)
        assert str(tiny_run.parent) not in text


class _Scripted(torch.nn.Module):
    """Stands in for GraphQAModule: each one-node graph's prediction is its node feature."""

    device = torch.device("cpu")

    def model_step(self, batch: Any) -> tuple[None, torch.Tensor]:
        torch.rand(3)  # RNG use while scoring must not leak into training's stream
        return None, batch.x[:, 0]


def _tiny_tuning_split() -> list[Data]:
    """The hand-computed example of test_metrics as a split of one-node graphs."""
    return [
        Data(
            x=torch.tensor([[float(p)]]),
            edge_index=torch.zeros(2, 0, dtype=torch.int64),
            edge_attr=torch.zeros(0, 1),
            y=torch.tensor([float(t)]),
            target_id=torch.tensor([int(g)]),
        )
        for p, t, g in zip(TUNE_PRED, TUNE_TRUE, TUNE_GROUPS, strict=True)
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_tuning_metrics_match_the_hand_computation(batch_size: int) -> None:
    scorer = TuningMetrics(_tiny_tuning_split(), batch_size=batch_size, top_k=1)
    rng_before = torch.get_rng_state()
    values = scorer.compute(_Scripted())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert values.keys() == TUNE_EXPECTED.keys()
    for name, expected in TUNE_EXPECTED.items():
        assert values[name] == pytest.approx(expected, abs=1e-6), name
    assert scorer.groups == 3


def test_tuning_groups_count_only_targets_with_two_models() -> None:
    graphs = _tiny_tuning_split()[:4]  # A (3 models) and one model of B
    assert TuningMetrics(graphs, batch_size=8, top_k=10).groups == 1
