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


# --------------------------------------------------------------------------------------------
# trainer.compile and the CUDA edge order

#: Compiled vs. eager after the same 2-epoch tiny run without dropout (inductor draws its own
#: dropout masks, so with dropout the runs follow different paths): inductor reorders float32
#: sums, so weights and metrics differ in the last bits only.
COMPILE_TOLERANCE = 1e-4


def test_compiled_training_saves_a_plain_checkpoint_within_tolerance_of_eager(
    tiny_params, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    from graphqa.config import parse_params
    from graphqa.train import train_stage

    runs, ckpts, metrics = {}, {}, {}
    for mode in ("eager", "compiled"):
        params = parse_params(
            tiny_params.to_dict(), {"model.dropout": 0.0, "trainer.compile": mode == "compiled"}
        )
        runs[mode] = tmp_path / mode
        train_stage(params=params, schema_dir=tiny_schema_dir, run_dir=runs[mode])
        ckpts[mode] = torch.load(runs[mode] / "checkpoints" / "last.ckpt", weights_only=True)
        metrics[mode] = json.loads((runs[mode] / "metrics.json").read_text())
    # Same keys as eager (no `_orig_mod.`), and no compile flag among the hyper-parameters.
    assert list(ckpts["compiled"]["state_dict"]) == list(ckpts["eager"]["state_dict"])
    assert "compile" not in ckpts["compiled"]["hyper_parameters"]
    module = load_module(runs["compiled"] / "checkpoints" / "last.ckpt")  # strict, eager
    assert not module.compile_net
    for key, value in ckpts["eager"]["state_dict"].items():
        diff = (ckpts["compiled"]["state_dict"][key].double() - value.double()).abs().max()
        assert float(diff) <= COMPILE_TOLERANCE, key
    for key in ("val_loss", "val_mae", "train_loss"):
        assert metrics["compiled"][key] == pytest.approx(
            metrics["eager"][key], abs=COMPILE_TOLERANCE
        )


def test_compiled_module_state_dict_has_plain_keys_and_copies_own_weights(
    tiny_run: Path, tiny_schema_dir: Path
) -> None:
    import copy

    from graphqa.module import GraphQAModule

    eager = load_module(tiny_run / "checkpoints" / "best.ckpt")
    hp = eager.hparams
    module = GraphQAModule(
        copy.deepcopy(eager.net),
        hp["optimizer"],
        hp["scheduler"],
        hp["loss"],
        hp["selection"],
        True,
    ).eval()
    batch = next(iter(GraphQADataModule(tiny_schema_dir / "packed", batch_size=8).val_dataloader()))
    with torch.no_grad():
        assert torch.allclose(module(batch), eager(batch), atol=1e-5)
        twin = copy.deepcopy(module)  # what weight averaging does
        for p in twin.parameters():
            p.add_(1.0)
        assert not torch.allclose(twin(batch), module(batch), atol=1e-3)
    assert list(module.state_dict()) == list(eager.state_dict())


def test_sort_edges_by_target_is_an_aligned_permutation() -> None:
    from graphqa.data import sort_edges_by_target

    gen = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, 7, (2, 40), generator=gen)
    edge_attr = torch.randn(40, 3, generator=gen)
    sorted_index, sorted_attr = sort_edges_by_target(edge_index, edge_attr, 7)
    assert sorted_attr is not None
    key = sorted_index[1] * 7 + sorted_index[0]
    assert bool((key[1:] >= key[:-1]).all())  # by target, then source

    def rows(index: torch.Tensor, attr: torch.Tensor) -> list[tuple]:
        pairs = zip(index[0].tolist(), index[1].tolist(), attr.tolist(), strict=True)
        return sorted((s, t, tuple(a)) for s, t, a in pairs)

    before, after = rows(edge_index, edge_attr), rows(sorted_index, sorted_attr)
    assert before == after and sorted_index.shape == edge_index.shape  # rows stay aligned
    empty = torch.zeros(2, 0, dtype=torch.int64)
    assert sort_edges_by_target(empty, None)[0] is empty


def test_cpu_batches_are_not_reordered(tiny_schema_dir: Path) -> None:
    data = GraphQADataModule(tiny_schema_dir / "packed", batch_size=8)
    batch = next(iter(data.val_dataloader()))
    edge_index = batch.edge_index.clone()
    out = data.on_after_batch_transfer(batch, 0)
    assert out.edge_index is batch.edge_index and torch.equal(out.edge_index, edge_index)


def test_packed_data_list_equals_per_graph_data_and_batches_alike(tiny_schema_dir: Path) -> None:
    from torch_geometric.data import Batch

    from graphqa.data import PackedSplit

    split = PackedSplit.load(tiny_schema_dir / "packed" / "train.pt")
    fast = split.data_list()
    index = {t: k for k, t in enumerate(split.target_names)}
    slow = [split.graph(i, index[split.targets[i]]) for i in range(len(split))]
    assert len(fast) == len(slow) > 0
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys() and a.num_nodes == b.num_nodes
        for key in b.keys():  # noqa: SIM118 (iterating a Data yields pairs)
            u, v = a[key], b[key]
            assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v), key
    batch_fast, batch_slow = Batch.from_data_list(fast), Batch.from_data_list(slow)
    for key in batch_slow.keys():  # noqa: SIM118
        assert torch.equal(batch_fast[key], batch_slow[key]), key
