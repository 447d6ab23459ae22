"""Fused GATv2 attention on CPU: the edge-sized part of a PyG ``GATv2Conv`` in one C++ pass.

Why: at the users' graph sizes (~175 nodes, ~1,850 edges per graph) a training step spends
most of its time streaming E x heads x channels tensors through ~20 separate torch ops
(gathers, adds, leaky ReLU, attention products, softmax, messages, scatters and their
gradients). The kernel in ``csrc/gatv2_attention.cpp`` does the same arithmetic node by node,
reading each edge's rows once per pass. Parameters stay in the PyG module, so checkpoints,
bundles and the PyG path are interchangeable; only float rounding differs between the paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import scatter

CSRC = Path(__file__).with_name("csrc") / "gatv2_attention.cpp"
#: Compiler flags that keep results the same on every x86-64 machine: no fused multiply-add,
#: no reassociation and no instruction set beyond the baseline (SSE2), whatever the compiler's
#: defaults. ``-fno-trapping-math``/``-fno-math-errno`` only drop floating-point exception and
#: ``errno`` bookkeeping (so GCC may turn selects into vector blends); no result changes.
#: ``-fopenmp``: ATen's ``parallel_for`` is a header template that only runs threads when the
#: extension itself is built with OpenMP.
CXX_FLAGS = (
    *("-O3", "-ffp-contract=off", "-fno-fast-math", "-march=x86-64", "-mtune=generic"),
    *("-fno-trapping-math", "-fno-math-errno", "-fopenmp"),
)


def build_dir() -> Path:
    """Where the compiled kernel is cached.

    ``$GRAPHQA_BUILD_DIR`` if set, else inside the Python environment (``.venv``, so every
    process and test of a checkout shares one build whatever its ``HOME``), else
    ``~/.cache/graphqa`` when the environment is not writable.
    """
    version = f"torch-{torch.__version__}"
    if os.environ.get("GRAPHQA_BUILD_DIR"):
        return Path(os.environ["GRAPHQA_BUILD_DIR"]) / version
    environment = Path(sys.prefix)
    if os.access(environment, os.W_OK):
        return environment / "graphqa-kernels" / version
    return Path.home() / ".cache" / "graphqa" / version


class KernelBuildError(RuntimeError):
    """The fused kernel could not be compiled here (no C++ compiler or ninja)."""


#: Extra flags per instruction set. ``avx2`` only widens the vector registers: the kernel's
#: sums are in an order written in the source, element-wise loops round each lane alike, and
#: ``-mno-fma`` keeps multiplies and adds apart, so both builds give the same bytes (tested);
#: ``avx2`` is just faster where the CPU has it (every machine the numeric pin accepts).
ISA_FLAGS = {"baseline": (), "avx2": ("-mavx2", "-mno-fma")}


@cache
def native_isa() -> str:
    """``avx2`` where this CPU has it, else ``baseline``."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "baseline"
    return "avx2" if " avx2" in flags else "baseline"


@cache
def kernel(isa: str) -> ModuleType:
    """The compiled kernel: built on first use (~25 s, needs ``g++``), then loaded from
    :func:`build_dir` (``make install`` builds it once).

    Args:
        isa: a key of :data:`ISA_FLAGS` (callers pass :func:`native_isa`).

    Returns:
        The extension module (``attend_forward``, ``attend_backward``).

    Raises:
        KernelBuildError: the build failed; the message says what to install, or how to run
            without the kernel (``model.attention_kernel: pyg``).
    """
    from torch.utils.cpp_extension import load

    venv_bin = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and (Path(venv_bin) / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    directory = build_dir() / isa
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return load(
            name=f"graphqa_gatv2_attention_{isa}",
            sources=[str(CSRC)],
            extra_cflags=[*CXX_FLAGS, *ISA_FLAGS[isa]],
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            verbose=False,
        )
    except (OSError, RuntimeError, subprocess.CalledProcessError) as err:
        raise KernelBuildError(
            f"{CSRC}: could not build the fused attention kernel in {directory} ({err}); "
            "expected g++ and ninja (`apt-get install g++`, `pip install ninja`), or set "
            "model.attention_kernel: pyg"
        ) from err


@dataclass(frozen=True)
class EdgePlan:
    """A batch's edges grouped by target and by source node (shared by every layer).

    Attributes:
        src, dst: the edge ends, shape (E,).
        by_dst, ptr_dst: edge ids sorted by target (stable) and each node's slice of them.
        by_src, ptr_src: the same by source node.
    """

    src: Tensor
    dst: Tensor
    by_dst: Tensor
    ptr_dst: Tensor
    by_src: Tensor
    ptr_src: Tensor

    @classmethod
    def of(cls, edge_index: Tensor, num_nodes: int) -> EdgePlan:
        src, dst = edge_index[0].contiguous(), edge_index[1].contiguous()

        def group(ends: Tensor) -> tuple[Tensor, Tensor]:
            # builders write each node's edges together: then the stable sort is the identity
            if bool((ends[1:] >= ends[:-1]).all()):
                order = torch.arange(ends.numel())
            else:
                order = torch.sort(ends, stable=True).indices
            counts = torch.bincount(ends, minlength=num_nodes)
            ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
            torch.cumsum(counts, 0, out=ptr[1:])
            return order, ptr

        by_dst, ptr_dst = group(dst)
        by_src, ptr_src = group(src)
        return cls(src, dst, by_dst, ptr_dst, by_src, ptr_src)


@dataclass(frozen=True)
class EdgeRows:
    """A layer's edge term as ``edge = (rows * scale) @ proj^T + shift``.

    Attributes:
        rows: (E, K) per-edge inputs (no gradient: data, not parameters).
        scale: (E, 1) per-edge scale, or None for 1 (may carry a gradient).
        proj: (heads * channels, K) projection.
        shift: (heads * channels,) offset.
    """

    rows: Tensor
    scale: Tensor | None
    proj: Tensor
    shift: Tensor


class _Attend(torch.autograd.Function):
    """Sum over incoming edges of ``softmax(att . leaky(x_l[j] + x_r[i] + e_ij)) * x_l[j]``,
    with ``e = (rows * scale) @ proj^T + shift``: the kernel forms the gradients of ``proj``,
    ``shift`` and ``scale`` itself, so no edge-by-channel gradient is ever written."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x_l: Tensor,
        x_r: Tensor,
        rows: Tensor,
        scale: Tensor,
        proj: Tensor,
        shift: Tensor,
        att: Tensor,
        keep: Tensor,
        plan: EdgePlan,
        slope: float,
    ) -> Tensor:
        heads, channels = att.shape
        scaled = (rows * scale).contiguous()
        edge = torch.addmm(shift, scaled, proj.t()).view(-1, heads, channels)
        out, alpha = kernel(native_isa()).attend_forward(
            x_l, x_r, edge, att, keep, plan.src, plan.by_dst, plan.ptr_dst, slope
        )
        ctx.save_for_backward(x_l, x_r, edge, scaled, scale, shift, att, keep, alpha)
        ctx.plan, ctx.slope = plan, slope  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        x_l, x_r, edge, scaled, scale, shift, att, keep, alpha = saved
        plan: EdgePlan = ctx.plan  # type: ignore[attr-defined]
        g_xl, g_xr, g_att, g_proj, g_shift, g_scaled = kernel(native_isa()).attend_backward(
            grad_out.contiguous(),
            *(x_l, x_r, edge, scaled, shift, att, keep, alpha),
            *(plan.src, plan.dst, plan.by_dst, plan.ptr_dst, plan.by_src, plan.ptr_src),
            ctx.slope,  # type: ignore[attr-defined]
        )
        # the kernel gives sum_c d_edge * (edge - shift) = scale * dL/dscale
        g_scale = (g_scaled.unsqueeze(1) / scale) if ctx.needs_input_grad[3] else None  # type: ignore[attr-defined]
        return g_xl, g_xr, None, g_scale, g_proj, g_shift, g_att, None, None, None


@dataclass(frozen=True)
class EdgeTerms:
    """Each layer's edge term ``lin_edge(edge_encoder(s))`` as :class:`EdgeRows`, and the
    per-graph mean of ``edge_encoder(s)``, without the E x hidden encoder output.

    Why: the edge encoder is ``LayerNorm(Linear(s))`` (or ``Linear(s)``) of a few input
    columns ``s``; ``LayerNorm`` is linear once each edge's scale is known, so
    ``lin_edge(LayerNorm(W s + b)) = ([s, 1] / sigma) P^T + c`` with small ``P``, ``c`` and a
    per-edge ``sigma`` from a (K+1) x (K+1) quadratic form. The edge-sized matmul then has
    K + 1 inner columns instead of ``hidden_dim`` (12 instead of 32 at the users' widths), and
    its gradients come out of the attention kernel. Same function, other rounding.

    Attributes:
        per_layer: one :class:`EdgeRows` per layer, in layer order.
        graph_mean: (B, hidden) mean of the encoded edge features per graph.
    """

    per_layer: list[EdgeRows]
    graph_mean: Tensor

    @classmethod
    def of(
        cls,
        encoder: nn.Sequential,
        convs: Sequence[GATv2Conv],
        edge_attr: Tensor,
        edge_batch: Tensor,
        num_graphs: int,
    ) -> EdgeTerms:
        linear, norm = encoder[0], encoder[1]
        rows = torch.cat([edge_attr, edge_attr.new_ones(edge_attr.size(0), 1)], dim=1)
        affine = torch.cat([linear.weight, linear.bias.unsqueeze(1)], dim=1)  # (D, K + 1)
        scale = None
        if isinstance(norm, nn.LayerNorm):
            centred = affine - affine.mean(dim=0, keepdim=True)
            gram = centred.t() @ centred / centred.size(0)
            variance = ((rows @ gram) * rows).sum(dim=1, keepdim=True)
            scale = torch.rsqrt(variance.clamp(min=0) + norm.eps)
            affine = centred * norm.weight.unsqueeze(1)
            shift = norm.bias
        else:
            shift = affine.new_zeros(affine.size(0))
        per_layer = [
            EdgeRows(rows, scale, conv.lin_edge.weight @ affine, conv.lin_edge.weight @ shift)
            for conv in convs
        ]
        scaled = rows if scale is None else rows * scale
        graph_rows = scatter(scaled, edge_batch, dim=0, dim_size=num_graphs, reduce="mean")
        return cls(per_layer, torch.addmm(shift, graph_rows, affine.t()))


def fused_gatv2(conv: GATv2Conv, x: Tensor, plan: EdgePlan, edge: EdgeRows | Tensor) -> Tensor:
    """``conv(x, edge_index, edge_attr)`` through the fused kernel, with ``conv``'s parameters.

    Supports what :class:`graphqa.model.TopoQANet` builds: heads averaged (``concat=False``),
    no self loops, no residual, separate left/right weights, edge features. Dropout on the
    attention weights draws the same random numbers as PyG's (one Bernoulli per edge and head).

    Args:
        conv: the layer whose parameters to use.
        x: node features, shape (N, in_channels).
        plan: the batch's :class:`EdgePlan`.
        edge: the edge features (E, edge_dim) that ``conv.lin_edge`` projects, or the layer's
            :class:`EdgeRows` from :class:`EdgeTerms`. Either way edge features are data: no
            gradient flows to them.

    Returns:
        Node outputs, shape (N, out_channels).

    Raises:
        ValueError: the edge features require a gradient.
    """
    if isinstance(edge, Tensor):
        edge = EdgeRows(edge, None, conv.lin_edge.weight, conv.lin_edge.weight.new_zeros(0))
    if edge.rows.requires_grad:
        raise ValueError("fused GATv2: edge features must not require a gradient")
    heads, channels = conv.heads, conv.out_channels
    x_l = conv.lin_l(x).view(-1, heads, channels)
    x_r = conv.lin_r(x).view(-1, heads, channels)
    keep = x.new_empty(0)
    if conv.training and conv.dropout > 0:
        keep = torch.empty((edge.rows.size(0), heads), dtype=x.dtype).bernoulli_(1 - conv.dropout)
        keep.div_(1 - conv.dropout)
    scale = edge.scale if edge.scale is not None else edge.rows.new_ones(1, 1)
    shift = edge.shift if edge.shift.numel() else edge.proj.new_zeros(edge.proj.size(0))
    out = _Attend.apply(
        x_l.contiguous(),
        x_r.contiguous(),
        edge.rows,
        scale,
        edge.proj,
        shift,
        conv.att.reshape(heads, channels).contiguous(),
        keep,
        plan,
        float(conv.negative_slope),
    )
    out = out.mean(dim=1)
    return out + conv.bias if conv.bias is not None else out


def supports(conv: nn.Module) -> bool:
    """Whether :func:`fused_gatv2` computes exactly what ``conv`` would."""
    return (
        isinstance(conv, GATv2Conv)
        and not conv.concat
        and not conv.add_self_loops
        and not conv.share_weights
        and conv.res is None
        and conv.lin_edge is not None
    )
