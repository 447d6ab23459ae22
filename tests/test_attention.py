"""The fused GATv2 attention kernel against PyG's GATv2Conv, on graphs built by hand.

The kernel must compute the same function as PyG (float64: equal to rounding), draw the same
dropout masks, give the same float32 bytes whatever the thread count, and make the whole
network's outputs and gradients match the PyG path.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch_geometric.nn import GATv2Conv

from graphqa import attention
from graphqa.attention import EdgePlan, EdgeTerms, KernelBuildError, fused_gatv2
from graphqa.contract import DataContractError
from graphqa.model import NetConfig, build_net

IN, EDGE, OUT, HEADS = 5, 3, 4, 2


def _conv(dropout: float = 0.0) -> GATv2Conv:
    torch.manual_seed(0)
    conv = GATv2Conv(
        IN, OUT, heads=HEADS, concat=False, edge_dim=EDGE, dropout=dropout, add_self_loops=False
    )
    with torch.no_grad():  # a non-zero bias, so the test sees it added
        conv.bias.uniform_(-1, 1)
    return conv.double()


def _graph() -> tuple[Tensor, Tensor, Tensor]:
    """Four nodes: node 0 has three incoming edges (two from node 1), node 3 none."""
    gen = torch.Generator().manual_seed(1)
    edge_index = torch.tensor([[1, 1, 2, 0, 2, 3], [0, 0, 0, 1, 1, 2]])
    x = torch.randn(4, IN, generator=gen, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(6, EDGE, generator=gen, dtype=torch.float64)  # data: no gradient
    return x, edge_index, edge_attr


def _grads(out: Tensor, inputs: list[Tensor], seed: int = 2) -> list[Tensor]:
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return list(torch.autograd.grad((out * weight).sum(), inputs))


def test_edge_plan_groups_edges_by_target_and_source() -> None:
    _, edge_index, _ = _graph()
    plan = EdgePlan.of(edge_index, 4)
    assert plan.ptr_dst.tolist() == [0, 3, 5, 6, 6]
    assert plan.by_dst.tolist() == [0, 1, 2, 3, 4, 5]
    assert plan.ptr_src.tolist() == [0, 1, 3, 5, 6]
    assert plan.by_src.tolist() == [3, 0, 1, 2, 4, 5]


def test_fused_layer_equals_pyg_and_its_gradients() -> None:
    conv = _conv()
    x, edge_index, edge_attr = _graph()
    inputs = [x, *conv.parameters()]
    expected = conv(x, edge_index, edge_attr)
    got = fused_gatv2(conv, x, EdgePlan.of(edge_index, 4), edge_attr)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert got[3].abs().sum() > 0  # no incoming edge: just the bias
    for g, e in zip(_grads(got, inputs), _grads(expected, inputs), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_dropout_draws_the_same_masks_as_pyg() -> None:
    conv = _conv(dropout=0.5).train()
    x, edge_index, edge_attr = _graph()
    torch.manual_seed(7)
    expected = conv(x, edge_index, edge_attr)
    torch.manual_seed(7)
    got = fused_gatv2(conv, x, EdgePlan.of(edge_index, 4), edge_attr)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.manual_seed(8)  # another draw gives another output: the masks are used
    assert not torch.allclose(fused_gatv2(conv, x, EdgePlan.of(edge_index, 4), edge_attr), got)


def _random_graph(nodes: int, edges: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    x = torch.randn(nodes, IN, generator=gen)
    return x, edge_index, torch.randn(edges, EDGE, generator=gen)


def test_float32_bytes_do_not_depend_on_the_thread_count() -> None:
    conv = _conv().float()
    x, edge_index, edge_attr = _random_graph(600, 6000, seed=3)
    x.requires_grad_(True)
    plan = EdgePlan.of(edge_index, 600)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            out = fused_gatv2(conv, x, plan, edge_attr)
            results.append([out, *_grads(out, [x, *conv.parameters()])])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


@pytest.mark.skipif(attention.native_isa() != "avx2", reason="this CPU has no AVX2")
def test_avx2_and_baseline_builds_give_the_same_bytes() -> None:
    x_l, x_r = torch.randn(300, HEADS, OUT), torch.randn(300, HEADS, OUT)
    _, edge_index, edge_attr = _random_graph(300, 4000, seed=5)
    rows = torch.cat([edge_attr, torch.ones(4000, 1)], dim=1)
    scale = (torch.rand(4000, 1) + 0.5).requires_grad_(True)
    proj = torch.randn(HEADS * OUT, EDGE + 1, requires_grad=True)
    shift, att = torch.randn(HEADS * OUT), torch.randn(HEADS, OUT)
    keep = (torch.rand(4000, HEADS) > 0.2).float() / 0.8
    plan = EdgePlan.of(edge_index, 300)
    results = []
    for isa in ("baseline", "avx2"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (x_l, x_r, shift, att)]
        lx_l, lx_r, lshift, latt = leaves
        ctx = pytest.MonkeyPatch.context()
        with ctx as patch:
            patch.setattr(attention, "native_isa", lambda isa=isa: isa)
            out = attention._Attend.apply(
                lx_l, lx_r, rows, scale, proj, lshift, latt, keep, plan, 0.2
            )
            results.append([out, *_grads(out, [*leaves, scale, proj])])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_edge_terms_equal_the_encoder_then_each_layers_projection(layer_norm: bool) -> None:
    net = build_net(
        NetConfig(node_dim=IN, edge_dim=EDGE, hidden_dim=8, heads=2, edge_layer_norm=layer_norm)
    ).double()
    edge_attr = _graph()[2]
    edge_batch = torch.tensor([0, 0, 0, 1, 1, 1])
    terms = EdgeTerms.of(net.edge_encoder, list(net.convs), edge_attr, edge_batch, 2)
    encoded = net.edge_encoder(edge_attr)
    for conv, term in zip(net.convs, terms.per_layer, strict=True):
        scaled = term.rows if term.scale is None else term.rows * term.scale
        got = scaled @ term.proj.t() + term.shift
        torch.testing.assert_close(got, conv.lin_edge(encoded), rtol=0, atol=1e-12)
    expected_mean = torch.stack([encoded[:3].mean(0), encoded[3:].mean(0)])
    torch.testing.assert_close(terms.graph_mean, expected_mean, rtol=0, atol=1e-12)


def test_network_outputs_and_gradients_match_the_pyg_path() -> None:
    config = NetConfig(node_dim=IN, edge_dim=EDGE, hidden_dim=8, heads=2, pooling="mean+max")
    pyg = build_net(config).double().eval()  # eval: no dropout, so both see the same function
    fused = build_net(NetConfig(**{**config.to_dict(), "attention_kernel": "fused"}))
    fused = fused.double().eval()
    fused.load_state_dict(pyg.state_dict())  # same parameter names: checkpoints interchange
    assert fused.fused_attention and not pyg.fused_attention
    x, edge_index, edge_attr = _random_graph(40, 300, seed=4)
    x, edge_attr = x.double(), edge_attr.double()
    batch = torch.arange(40) // 10
    pyg.fit_standardizers(x, edge_attr)
    fused.fit_standardizers(x, edge_attr)
    expected = pyg(x, edge_index, edge_attr, batch, 4)
    got = fused(x, edge_index, edge_attr, batch, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for g, e in zip(
        _grads(got, list(fused.parameters())), _grads(expected, list(pyg.parameters())), strict=True
    ):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_edge_features_that_need_a_gradient_are_refused() -> None:
    conv = _conv()
    x, edge_index, edge_attr = _graph()
    with pytest.raises(ValueError, match="must not require a gradient"):
        fused_gatv2(conv, x, EdgePlan.of(edge_index, 4), edge_attr.requires_grad_(True))


def test_stored_configs_without_the_key_rebuild_the_pyg_network() -> None:
    stored = {"node_dim": IN, "edge_dim": EDGE}
    assert NetConfig.from_dict(stored).attention_kernel == "pyg"
    with pytest.raises(DataContractError, match=r"attention_kernel.*pyg or fused"):
        NetConfig.from_dict({**stored, "attention_kernel": "cuda"}, "model_config.json")


def test_a_failed_build_says_what_to_install_or_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(**_: object) -> None:
        raise RuntimeError("Error building extension: g++: not found")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    attention.kernel.cache_clear()
    try:
        expected = r"gatv2_attention\.cpp.*g\+\+.*attention_kernel: pyg"
        with pytest.raises(KernelBuildError, match=expected):
            attention.kernel("baseline")
    finally:
        attention.kernel.cache_clear()
