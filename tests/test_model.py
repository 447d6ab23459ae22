"""TopoQANet and FeatureStandardizer on hand-built graphs (in the style of PyG's conv tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from graphqa.config import ConfigError, parse_params
from graphqa.layout import FEATURE_METADATA
from graphqa.model import FeatureStandardizer, NetConfig, Pooling, TopoQANet, build_net
from graphqa.schema import FeatureSchema
from graphqa.train import net_config_for

POOLINGS: list[Pooling] = ["mean", "max", "add", "sum", "attention", "mean+max", "mean+max+sum"]
NODE_DIM, EDGE_DIM = 7, 3


def _config(**kwargs: object) -> NetConfig:
    base: dict[str, object] = {
        "node_dim": NODE_DIM,
        "edge_dim": EDGE_DIM,
        "hidden_dim": 16,
        "num_layers": 2,
        "heads": 2,
        "dropout": 0.1,
    }
    base.update(kwargs)
    return NetConfig(**base)  # type: ignore[arg-type]


def _graph(num_nodes: int = 4, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """A path graph 0-1-2-...-(n-1) with edges in both directions."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.arange(num_nodes - 1)
    edge_index = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
    x = torch.randn(num_nodes, NODE_DIM, generator=gen)
    edge_attr = torch.randn(edge_index.size(1), EDGE_DIM, generator=gen)
    return x, edge_index, edge_attr


def _batch() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two graphs (4 and 3 nodes) concatenated as PyG batches them."""
    x1, ei1, ea1 = _graph(4, seed=1)
    x2, ei2, ea2 = _graph(3, seed=2)
    x = torch.cat([x1, x2])
    edge_index = torch.cat([ei1, ei2 + x1.size(0)], dim=1)
    edge_attr = torch.cat([ea1, ea2])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    return x, edge_index, edge_attr, batch


def _net(**kwargs: object) -> TopoQANet:
    torch.manual_seed(0)
    net = build_net(_config(**kwargs))
    net.eval()
    return net


def test_single_hand_built_graph() -> None:
    x = torch.randn(4, NODE_DIM)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    edge_attr = torch.randn(4, EDGE_DIM)
    batch = torch.zeros(4, dtype=torch.long)
    net = _net()
    out = net(x, edge_index, edge_attr, batch)
    assert out.size() == (1,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_shape_and_range(pooling: Pooling) -> None:
    net = _net(pooling=pooling)
    x, edge_index, edge_attr, batch = _batch()
    out = net(x, edge_index, edge_attr, batch)
    assert out.size() == (2,)
    assert out.dtype == torch.float32
    prob = torch.sigmoid(out)
    assert bool(((prob >= 0) & (prob <= 1)).all())
    # num_graphs given explicitly gives the same answer
    assert torch.allclose(net(x, edge_index, edge_attr, batch, num_graphs=2), out)
    assert (net.attention_pool is not None) == (pooling == "attention")


@pytest.mark.parametrize("pooling", ["mean", "max", "add"])
def test_pool_matches_hand_computed(pooling: Pooling) -> None:
    net = _net(pooling=pooling)
    h = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 4.0], [-1.0, 2.0], [0.0, 0.0]])
    batch = torch.tensor([0, 0, 1, 1, 1])
    expected = {
        "mean": torch.tensor([[2.0, -1.0], [4.0 / 3, 2.0]]),
        "max": torch.tensor([[3.0, 0.0], [5.0, 4.0]]),
        "add": torch.tensor([[4.0, -2.0], [4.0, 6.0]]),
    }[pooling]
    assert torch.allclose(net.pool(h, batch, 2), expected)


def test_attention_pool_is_a_convex_combination() -> None:
    net = _net(pooling="attention")
    h = torch.tensor([[1.0] * 16, [3.0] * 16, [5.0] * 16])
    out = net.pool(h, torch.tensor([0, 0, 1]), 2)
    assert out.shape == (2, 16)
    assert bool(((out[0] >= 1.0 - 1e-6) & (out[0] <= 3.0 + 1e-6)).all())
    assert torch.allclose(out[1], h[2])  # a single node gets weight 1


@pytest.mark.parametrize("pooling", POOLINGS)
def test_duplicated_edges_do_not_change_output(pooling: Pooling) -> None:
    # attention is a softmax over neighbours and edge features are averaged per graph, so
    # listing every edge twice must not change the estimate
    net = _net(pooling=pooling)
    x, edge_index, edge_attr, batch = _batch()
    out = net(x, edge_index, edge_attr, batch)
    doubled = net(x, edge_index.repeat(1, 2), edge_attr.repeat(2, 1), batch)
    assert torch.allclose(out, doubled, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_graphs_in_a_batch_do_not_interact(pooling: Pooling) -> None:
    net = _net(pooling=pooling)
    x, edge_index, edge_attr, batch = _batch()
    together = net(x, edge_index, edge_attr, batch)
    for g, seed, n in ((0, 1, 4), (1, 2, 3)):
        xg, eig, eag = _graph(n, seed=seed)
        alone = net(xg, eig, eag, torch.zeros(n, dtype=torch.long))
        assert torch.allclose(alone, together[g : g + 1], atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_permutation_invariance(pooling: Pooling) -> None:
    net = _net(pooling=pooling)
    x, edge_index, edge_attr = _graph(6, seed=3)
    # a few extra edges so the graph is not a symmetric path
    edge_index = torch.cat([edge_index, torch.tensor([[0, 5, 2], [3, 1, 4]])], dim=1)
    edge_attr = torch.cat([edge_attr, torch.randn(3, EDGE_DIM)])
    net.fit_standardizers(x * 3 + 1, edge_attr * 2 - 1)
    batch = torch.zeros(6, dtype=torch.long)
    out = net(x, edge_index, edge_attr, batch)

    perm = torch.tensor([4, 2, 0, 5, 1, 3])  # new node i is old node perm[i]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    edge_perm = torch.randperm(edge_index.size(1), generator=torch.Generator().manual_seed(0))
    out_perm = net(x[perm], inverse[edge_index][:, edge_perm], edge_attr[edge_perm], batch)
    assert torch.allclose(out, out_perm, atol=1e-5)


def test_sized_from_config_dims() -> None:
    net = _net()
    assert net.node_encoder.in_features == NODE_DIM
    assert net.edge_encoder[0].in_features == EDGE_DIM
    assert net.node_norm.out_dim == NODE_DIM and net.edge_norm.out_dim == EDGE_DIM
    assert len(net.convs) == 2 and len(net.norms) == 2

    other = TopoQANet(NetConfig(node_dim=11, edge_dim=5, hidden_dim=8, num_layers=1, heads=1))
    assert other.node_encoder.in_features == 11
    assert other.edge_encoder[0].in_features == 5
    assert other.node_encoder.out_features == 8
    assert len(other.convs) == 1


def test_keep_indices_size_the_encoders_and_drop_columns() -> None:
    net = _net(node_keep=[0, 2, 5], edge_keep=[1])
    assert net.node_encoder.in_features == 3
    assert net.edge_encoder[0].in_features == 1
    assert net.node_norm.index.tolist() == [0, 2, 5]
    x, edge_index, edge_attr, batch = _batch()
    out = net(x, edge_index, edge_attr, batch)
    assert out.size() == (2,)

    # dropped columns have no influence, kept ones do
    x_dropped, ea_dropped = x.clone(), edge_attr.clone()
    x_dropped[:, [1, 3, 4, 6]] = 100.0
    ea_dropped[:, [0, 2]] = -100.0
    assert torch.allclose(net(x_dropped, edge_index, ea_dropped, batch), out)
    x_kept = x.clone()
    x_kept[:, 5] += 10.0
    assert not torch.allclose(net(x_kept, edge_index, edge_attr, batch), out)


@pytest.mark.parametrize("edge_layer_norm", [False, True])
def test_edge_layer_norm_option(edge_layer_norm: bool) -> None:
    net = _net(edge_layer_norm=edge_layer_norm)
    expected = nn.LayerNorm if edge_layer_norm else nn.Identity
    assert isinstance(net.edge_encoder[1], expected)
    x, edge_index, edge_attr, batch = _batch()
    out = net(x, edge_index, edge_attr, batch)
    assert out.size() == (2,)
    assert torch.isfinite(out).all()


def test_standardizer_fit_zero_mean_unit_std() -> None:
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3])
    offsets = torch.tensor([5e-3, -1.0, 0.3, 2.0, -40.0, 7e2, 3e3])
    x = torch.randn(500, 7, generator=gen) * scales + offsets
    x = torch.cat([x, torch.full((500, 1), 0.7), torch.zeros(500, 1)], dim=1)
    std = FeatureStandardizer(9)
    std.fit(x)
    out = std(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert torch.allclose(out[:, :7].mean(dim=0), torch.zeros(7), atol=1e-4)
    assert torch.allclose(out[:, :7].std(dim=0, unbiased=False), torch.ones(7), atol=1e-3)
    # constant columns: std 1 (no division by zero), output exactly 0
    assert std.std[7:].tolist() == [1.0, 1.0]
    assert torch.allclose(std.mean[7:], torch.tensor([0.7, 0.0]))
    assert torch.equal(out[:, 7:], torch.zeros(500, 2))


def test_standardizer_fit_on_selected_columns() -> None:
    x = torch.tensor([[1.0, 10.0, 100.0], [3.0, 30.0, 300.0]])
    std = FeatureStandardizer(3, keep=[2, 0])
    std.fit(x)
    assert std.out_dim == 2
    assert torch.allclose(std.mean, torch.tensor([200.0, 2.0]))
    assert torch.allclose(std.std, torch.tensor([100.0, 1.0]))
    assert torch.allclose(std(x), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_standardizer_buffers_travel_in_state_dict() -> None:
    std = FeatureStandardizer(4, keep=[1, 3])
    assert {"index", "mean", "std"} <= set(std.state_dict())
    assert not list(std.parameters())  # statistics are not trained

    net = _net(node_keep=[0, 2, 5])
    x, edge_index, edge_attr, batch = _batch()
    net.fit_standardizers(x * 5 + 2, edge_attr * 0.1)
    assert torch.allclose(net.node_norm.mean, (x * 5 + 2)[:, [0, 2, 5]].mean(dim=0), atol=1e-5)
    assert torch.allclose(
        net.edge_norm.std, (edge_attr * 0.1).std(dim=0, unbiased=False), atol=1e-5
    )
    state = net.state_dict()
    for prefix in ("node_norm", "edge_norm"):
        for name in ("index", "mean", "std"):
            assert f"{prefix}.{name}" in state
    assert state["node_norm.index"].tolist() == [0, 2, 5]

    fresh = build_net(_config(node_keep=[0, 2, 5]))
    fresh.load_state_dict(state)
    fresh.eval()
    assert torch.equal(fresh.node_norm.mean, net.node_norm.mean)
    assert torch.equal(fresh.edge_norm.std, net.edge_norm.std)
    assert torch.allclose(
        fresh(x, edge_index, edge_attr, batch), net(x, edge_index, edge_attr, batch)
    )


@pytest.mark.parametrize("keep", [[0, 3], [-1], [0, 1, 2, 3, 4]])
def test_out_of_range_keep_raises(keep: list[int]) -> None:
    with pytest.raises(ValueError, match="keep indices"):
        FeatureStandardizer(3, keep)


def test_out_of_range_keep_in_config_raises() -> None:
    with pytest.raises(ValueError):
        build_net(_config(node_keep=[0, 7]))
    with pytest.raises(ValueError):
        build_net(_config(edge_keep=[3]))


def test_reset_parameters_changes_weights() -> None:
    net = _net(pooling="attention")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.reset_parameters()
    after = net.state_dict()
    for key in (
        "node_encoder.weight",
        "edge_encoder.0.weight",
        "convs.0.att",
        "head.0.weight",
        "attention_pool.gate_nn.weight",
    ):
        assert not torch.equal(before[key], after[key]), key


def test_net_config_round_trip() -> None:
    config = _config(
        pooling="attention", edge_layer_norm=False, node_keep=[0, 2, 5], edge_keep=[1, 2]
    )
    as_dict = config.to_dict()
    assert as_dict["node_keep"] == [0, 2, 5]
    assert as_dict["pooling"] == "attention"
    assert NetConfig.from_dict(as_dict) == config
    assert NetConfig.from_dict(json.loads(json.dumps(as_dict))) == config
    as_dict["node_keep"].append(6)  # to_dict hands out a copy
    assert config.node_keep == [0, 2, 5]
    assert build_net(config.to_dict()).config == config
    assert NetConfig.from_dict(_config().to_dict()) == _config()


# --------------------------------------------------------------------------------------------
# Multi-part pooling and the pooled-feature skip path (issue 13)

HIDDEN = 16
#: Node embeddings of a hand-built 4-node / 2-graph batch (nodes 0-1: graph 0, 2-3: graph 1).
H4 = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 4.0], [-1.0, 2.0]])
B4 = torch.tensor([0, 0, 1, 1])


def _batch4() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """4 nodes in 2 graphs: graph 0 has 2 edges (0<->1), graph 1 has 3 (2<->3, 3->2 twice)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, NODE_DIM, generator=gen)
    edge_index = torch.tensor([[0, 1, 2, 3, 3], [1, 0, 3, 2, 2]])
    edge_attr = torch.randn(5, EDGE_DIM, generator=gen)
    return x, edge_index, edge_attr, B4


def _head_input(net: TopoQANet, *inputs: Tensor) -> Tensor:
    """What the head's first Linear receives, captured with a forward pre-hook."""
    seen: list[Tensor] = []
    handle = net.head[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    net(*inputs)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(
    ("pooling", "parts"),
    [("mean", 1), ("max", 1), ("sum", 1), ("attention", 1), ("mean+max", 2), ("mean+max+sum", 3)],
)
def test_head_width_follows_pooled_parts(pooling: Pooling, parts: int) -> None:
    net = _net(pooling=pooling)
    width = (parts + 1) * HIDDEN  # pooled parts + mean encoded edge features
    assert net.head[0].in_features == net.head_in_dim == width
    assert _head_input(net, *_batch4()).shape == (2, width)


def test_multi_part_pool_values() -> None:
    mean = torch.tensor([[2.0, -1.0], [2.0, 3.0]])
    high = torch.tensor([[3.0, 0.0], [5.0, 4.0]])
    total = torch.tensor([[4.0, -2.0], [4.0, 6.0]])
    assert torch.equal(_net(pooling="sum").pool(H4, B4, 2), total)
    assert torch.equal(_net(pooling="mean+max").pool(H4, B4, 2), torch.cat([mean, high], -1))
    assert torch.equal(
        _net(pooling="mean+max+sum").pool(H4, B4, 2), torch.cat([mean, high, total], -1)
    )
    # an explicit size keeps trailing empty graphs (zeros), so no batch.max() is needed
    assert _net(pooling="mean+max").pool(H4, B4, 3).shape == (3, 4)


def test_forward_pools_the_final_node_embeddings() -> None:
    net = _net(pooling="mean+max")
    x, edge_index, edge_attr, batch = _batch4()
    seen: list[Tensor] = []
    handle = net.norms[-1].register_forward_hook(lambda _m, _a, out: seen.append(out))
    head_in = _head_input(net, x, edge_index, edge_attr, batch)
    handle.remove()
    h = seen[-1]  # final node embeddings, (4, HIDDEN)
    mean = torch.stack([h[:2].mean(0), h[2:].mean(0)])
    high = torch.stack([h[:2].amax(0), h[2:].amax(0)])
    assert torch.allclose(head_in[:, : 2 * HIDDEN], torch.cat([mean, high], dim=-1))


def test_invalid_pooling_raises() -> None:
    with pytest.raises(ValueError, match="pooling 'mean\\+median'"):
        _net(pooling="mean+median")
    with pytest.raises(ValueError, match="pooling"):
        _net(pooling="mean+attention")


@pytest.mark.parametrize(("node_keep", "edge_keep"), [(None, None), ([0, 2, 5], [1])])
def test_pooled_skip_width_follows_schema_dims(
    node_keep: list[int] | None, edge_keep: list[int] | None
) -> None:
    net = _net(pooling="mean+max", pooled_skip=True, node_keep=node_keep, edge_keep=edge_keep)
    node_in = NODE_DIM if node_keep is None else len(node_keep)
    edge_in = EDGE_DIM if edge_keep is None else len(edge_keep)
    skip = 2 + 2 * (node_in + edge_in)
    assert net.skip_dim == skip
    assert net.skip_norm is not None and net.skip_norm.normalized_shape == (skip,)
    assert net.head[0].in_features == 3 * HIDDEN + skip
    assert _head_input(net, *_batch4()).shape == (2, 3 * HIDDEN + skip)

    other = TopoQANet(NetConfig(node_dim=11, edge_dim=5, hidden_dim=8, pooled_skip=True))
    assert other.skip_dim == 2 + 2 * (11 + 5)
    assert other.head[0].in_features == 2 * 8 + other.skip_dim


def test_graph_statistics_hand_computed() -> None:
    net = _net(pooled_skip=True)
    x, _, edge_attr, batch = _batch4()
    net.fit_standardizers(x * 2 + 1, edge_attr - 3)
    x_std, e_std = net.node_norm(x), net.edge_norm(edge_attr)
    edge_batch = torch.tensor([0, 0, 1, 1, 1])
    stats = net.graph_statistics(x_std, e_std, edge_batch, batch, 2)
    assert stats.shape == (2, net.skip_dim)
    counts = torch.log1p(torch.tensor([[2.0, 2.0], [2.0, 3.0]]))
    assert torch.allclose(stats[:, :2], counts)
    node_sum = torch.stack([x_std[:2].sum(0), x_std[2:].sum(0)])
    edge_sum = torch.stack([e_std[:2].sum(0), e_std[2:].sum(0)])
    expected = torch.cat(
        [
            node_sum / 2,
            torch.sign(node_sum) * torch.log1p(node_sum.abs()),
            edge_sum / torch.tensor([[2.0], [3.0]]),
            torch.sign(edge_sum) * torch.log1p(edge_sum.abs()),
        ],
        dim=-1,
    )
    assert torch.allclose(stats[:, 2:], expected, atol=1e-6)


def test_pooled_skip_changes_output_and_sees_graph_size() -> None:
    x, edge_index, edge_attr, batch = _batch4()
    torch.manual_seed(0)
    with_skip = build_net(_config(pooled_skip=True)).eval()
    torch.manual_seed(0)
    without = build_net(_config(pooled_skip=False)).eval()
    assert not torch.allclose(
        with_skip(x, edge_index, edge_attr, batch), without(x, edge_index, edge_attr, batch)
    )
    # listing every edge twice is invisible to attention and mean pooling, but the skip path
    # counts edges and sums their features, so it sees the difference
    doubled_edges = with_skip(x, edge_index.repeat(1, 2), edge_attr.repeat(2, 1), batch)
    assert not torch.allclose(doubled_edges, with_skip(x, edge_index, edge_attr, batch))
    assert torch.allclose(
        without(x, edge_index.repeat(1, 2), edge_attr.repeat(2, 1), batch),
        without(x, edge_index, edge_attr, batch),
        atol=1e-5,
    )


@pytest.mark.parametrize("pooling", ["mean", "mean+max+sum"])
def test_pooled_skip_keeps_permutation_invariance_and_graph_independence(pooling: Pooling) -> None:
    net = _net(pooling=pooling, pooled_skip=True)
    x, edge_index, edge_attr, batch = _batch()
    together = net(x, edge_index, edge_attr, batch)
    for g, seed, n in ((0, 1, 4), (1, 2, 3)):
        xg, eig, eag = _graph(n, seed=seed)
        alone = net(xg, eig, eag, torch.zeros(n, dtype=torch.long))
        assert torch.allclose(alone, together[g : g + 1], atol=1e-5)
    xg, eig, eag = _graph(4, seed=1)
    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(4)
    zeros = torch.zeros(4, dtype=torch.long)
    assert torch.allclose(net(xg[perm], inverse[eig], eag, zeros), together[:1], atol=1e-5)


def test_old_net_config_dict_loads_with_defaults() -> None:
    # a NetConfig as checkpoints and bundles stored it before pooled_skip existed
    old = {
        "node_dim": NODE_DIM,
        "edge_dim": EDGE_DIM,
        "hidden_dim": 16,
        "num_layers": 2,
        "heads": 2,
        "dropout": 0.1,
        "pooling": "mean",
        "edge_layer_norm": True,
        "node_keep": None,
        "edge_keep": None,
    }
    config = NetConfig.from_dict(json.loads(json.dumps(old)))
    assert config.pooled_skip is False
    net = build_net(old)
    assert net.skip_norm is None and net.head[0].in_features == 2 * 16
    # an old state dict (no skip parameters) loads strictly into the rebuilt network
    state = _net().state_dict()
    assert not any(k.startswith("skip_norm") for k in state)
    net.load_state_dict(state)
    assert _config(pooled_skip=True).to_dict()["pooled_skip"] is True
    assert NetConfig.from_dict(_config(pooled_skip=True, pooling="mean+max").to_dict()) == (
        _config(pooled_skip=True, pooling="mean+max")
    )


def test_dropout_acts_only_in_training() -> None:
    net = _net(dropout=0.5)
    x, edge_index, edge_attr, batch = _batch4()
    out = net(x, edge_index, edge_attr, batch)
    assert torch.equal(out, net(x, edge_index, edge_attr, batch))  # eval: deterministic
    net.train()
    seen: list[Tensor] = []
    handle = net.norms[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    torch.manual_seed(1)
    net(x, edge_index, edge_attr, batch)
    torch.manual_seed(2)
    net(x, edge_index, edge_attr, batch)
    handle.remove()
    # attention dropout: the residual input to the first LayerNorm differs between passes
    assert not torch.allclose(seen[0], seen[1])
    assert any(isinstance(m, nn.Dropout) for m in net.head)


@pytest.mark.parametrize(
    ("pooling", "pooled_skip"),
    [("mean", False), ("sum", False), ("mean+max", False), ("mean+max+sum", True), ("mean", True)],
)
def test_each_option_trains_one_step(pooling: Pooling, pooled_skip: bool) -> None:
    net = _net(pooling=pooling, pooled_skip=pooled_skip, dropout=0.25)
    net.train()
    x, edge_index, edge_attr, batch = _batch4()
    net.fit_standardizers(x, edge_attr)
    target = torch.tensor([0.2, 0.8])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=3e-2)
    loss = nn.functional.mse_loss(torch.sigmoid(net(x, edge_index, edge_attr, batch)), target)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["head.0.weight"].abs().sum() > 0
    if pooled_skip:
        assert net.skip_norm is not None
        assert net.skip_norm.weight.grad is not None
        assert net.skip_norm.weight.grad.abs().sum() > 0
        # the head's columns reading the skip statistics get gradient too
        assert grads["head.0.weight"][:, -net.skip_dim :].abs().sum() > 0
    before = net.head[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, net.head[0].weight)
    loss2 = nn.functional.mse_loss(torch.sigmoid(net(x, edge_index, edge_attr, batch)), target)
    assert torch.isfinite(loss2)


def test_params_reach_the_network(tiny_schema_dir: Path) -> None:
    # model.pooling_type / model.pooled_skip flow from params.yaml into the saved NetConfig
    schema = FeatureSchema.load(tiny_schema_dir / FEATURE_METADATA)
    params = parse_params(
        {}, {"model.pooling_type": "mean+max+sum", "model.pooled_skip": True, "model.dropout": 0.25}
    )
    config = net_config_for(params, schema)
    assert (config.pooling, config.pooled_skip, config.dropout) == ("mean+max+sum", True, 0.25)
    net = build_net(config)
    node_in, edge_in = net.node_norm.out_dim, net.edge_norm.out_dim
    assert net.skip_dim == 2 + 2 * (node_in + edge_in)
    assert node_in + edge_in > 0 and node_in <= schema.node_dim and edge_in <= schema.edge_dim
    assert net.head[0].in_features == 4 * params.model.hidden_dim + net.skip_dim
    assert net_config_for(parse_params({}), schema).pooled_skip is False
    with pytest.raises(ConfigError, match=r"model\.pooling_type"):
        parse_params({}, {"model.pooling_type": "mean+median"})
