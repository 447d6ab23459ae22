"""GraphQAModule: pairwise ranking loss by hand; a reloaded checkpoint scores as at train time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphqa.data import GraphQADataModule
from graphqa.module import load_module, pairwise_ranking_loss


def test_metric_after_reload_equals_metric_at_train_time(
    tiny_run: Path, tiny_schema_dir: Path
) -> None:
    module = load_module(tiny_run / "checkpoints" / "best.ckpt")
    data = GraphQADataModule(tiny_schema_dir / "packed", batch_size=8)
    preds, ys = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            preds.append(torch.sigmoid(module(batch)))
            ys.append(batch.y)
    val_loss = float(((torch.cat(preds).double() - torch.cat(ys).double()) ** 2).mean())
    recorded = json.loads((tiny_run / "metrics.json").read_text())["val_loss"]
    assert val_loss == pytest.approx(recorded, abs=1e-6)


def test_pairwise_ranking_loss_correct_order_is_zero() -> None:
    true = torch.tensor([0.8, 0.4, 0.2])
    group = torch.tensor([0, 0, 0])
    loss = pairwise_ranking_loss(torch.tensor([0.9, 0.5, 0.1]), true, group)
    assert loss.shape == ()
    assert loss.item() == 0.0
    # margin 0.5: pair diffs 0.4, 0.8, 0.4 -> relu(0.5 - d) = 0.1, 0, 0.1
    loss = pairwise_ranking_loss(torch.tensor([0.9, 0.5, 0.1]), true, group, margin=0.5)
    assert loss.item() == pytest.approx(0.2 / 3)


def test_pairwise_ranking_loss_reversed_is_positive() -> None:
    pred = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    loss = pairwise_ranking_loss(pred, torch.tensor([0.8, 0.4, 0.2]), torch.tensor([0, 0, 0]))
    # diffs pred_i - pred_j over true_i > true_j: -0.4, -0.8, -0.4
    assert loss.item() == pytest.approx(1.6 / 3)
    loss.backward()
    assert pred.grad is not None
    assert pred.grad.tolist() == pytest.approx([-2 / 3, 0.0, 2 / 3])


def test_pairwise_ranking_loss_ignores_cross_target_pairs() -> None:
    # within each target the order is right; across targets it is reversed
    pred = torch.tensor([0.2, 0.1, 0.9, 0.8])
    true = torch.tensor([0.9, 0.8, 0.2, 0.1])
    assert pairwise_ranking_loss(pred, true, torch.tensor([0, 0, 1, 1])).item() == 0.0
    assert pairwise_ranking_loss(pred, true, torch.tensor([0, 0, 0, 0])).item() > 0.0


def test_pairwise_ranking_loss_zero_without_valid_pairs() -> None:
    pred = torch.tensor([0.1, 0.9, 0.5])
    # every decoy its own target
    assert (
        pairwise_ranking_loss(pred, torch.tensor([0.9, 0.1, 0.3]), torch.tensor([0, 1, 2])).item()
        == 0.0
    )
    # equal labels give no ordered pair
    loss = pairwise_ranking_loss(pred, torch.full((3,), 0.4), torch.tensor([0, 0, 0]))
    assert loss.item() == 0.0
    assert torch.isfinite(loss)
