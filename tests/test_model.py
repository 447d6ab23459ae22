"""TopoQANet and FeatureStandardizer on hand-built graphs (in the style of PyG's conv tests)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from graphqa.model import FeatureStandardizer, NetConfig, Pooling, TopoQANet, build_net

POOLINGS: list[Pooling] = ["mean", "max", "add", "attention"]
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
