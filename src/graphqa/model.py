"""TopoQA-style edge-aware graph attention regressor, sized from the resolved schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch_geometric.nn import AttentionalAggregation, GATv2Conv
from torch_geometric.nn.pool import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

from graphqa.attention import EdgePlan, EdgeTerms, fused_gatv2, supports
from graphqa.contract import DataContractError

AttentionKernel = Literal["pyg", "fused"]
Pooling = Literal["mean", "max", "add", "sum", "attention", "mean+max", "mean+max+sum"]

#: Readout of each single pooling; ``sum`` is PyG's ``add`` under its usual name. Every one is
#: called with an explicit ``size`` (graphs in the batch) so no data-dependent ``batch.max()``
#: is needed and ``torch.compile`` can trace it.
POOL_FUNCTIONS = {
    "mean": global_mean_pool,
    "max": global_max_pool,
    "add": global_add_pool,
    "sum": global_add_pool,
}


def pooling_parts(pooling: str) -> list[str]:
    """The single poolings a (possibly ``+``-joined) pooling concatenates, in order."""
    parts = pooling.split("+")
    unknown = [p for p in parts if p not in POOL_FUNCTIONS and p != "attention"]
    if unknown or ("attention" in parts and len(parts) > 1):
        raise ValueError(
            f"pooling {pooling!r}: expected one of mean|max|add|sum|attention or a '+' join "
            "of mean|max|sum"
        )
    return parts


def signed_log1p(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``: compresses sums that grow with graph size, keeps the sign."""
    return torch.sign(x) * torch.log1p(x.abs())


class FeatureStandardizer(nn.Module):
    r"""Selects input columns and standardises them with statistics fitted on train only.

    The selection (a feature mask) and the statistics are buffers, so they travel with the
    weights into checkpoints and bundles and inference sees exactly what training saw.

    Args:
        in_dim: number of columns of the raw input (the schema's dim).
        keep: indices of the columns to keep (default: all), in input order.

    Shapes:
        - input: :math:`(*, \text{in\_dim})`
        - output: :math:`(*, \text{len(keep)})`
    """

    def __init__(self, in_dim: int, keep: Sequence[int] | None = None) -> None:
        super().__init__()
        index = (
            torch.arange(in_dim) if keep is None else torch.as_tensor(list(keep), dtype=torch.long)
        )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= in_dim):
            raise ValueError(f"keep indices must lie in [0, {in_dim}); got {index.tolist()}")
        self.in_dim = in_dim
        self.register_buffer("index", index)
        self.register_buffer("mean", torch.zeros(index.numel()))
        self.register_buffer("std", torch.ones(index.numel()))

    @property
    def out_dim(self) -> int:
        return int(self.index.numel())

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set mean/std from raw rows (train split only); constant columns get std 1."""
        selected = x.index_select(-1, self.index).double()
        std = selected.std(dim=0, unbiased=False) if len(selected) else torch.ones(self.out_dim)
        self.mean.copy_(selected.mean(dim=0) if len(selected) else torch.zeros(self.out_dim))
        self.std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x.index_select(-1, self.index) - self.mean) / self.std


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild :class:`TopoQANet` (stored in checkpoints and bundles)."""

    node_dim: int
    edge_dim: int
    hidden_dim: int = 64
    num_layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    pooling: Pooling = "mean"
    edge_layer_norm: bool = True
    node_keep: list[int] | None = field(default=None)
    edge_keep: list[int] | None = field(default=None)
    #: Per-graph input statistics joined to the pooled embedding (see :class:`TopoQANet`).
    #: Defaults keep checkpoints written before the field existed loadable and unchanged.
    pooled_skip: bool = False
    #: How the attention layers are computed: ``fused`` (graphqa's C++ kernel, same function,
    #: other rounding) or ``pyg`` (PyG's ``GATv2Conv``). Stored configs without the key were
    #: trained with PyG, so that is what rebuilding them uses.
    attention_kernel: AttentionKernel = "pyg"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any, source: str | Path = "net config") -> NetConfig:
        """Rebuild from :meth:`to_dict`, checking every field first.

        Keys added later (``pooled_skip``, ``attention_kernel``) take their defaults, so
        configs stored in older checkpoints and bundles still load.

        Args:
            obj: the dict (parsed ``model_config.json``, or a checkpoint's ``net_config``).
            source: the file it came from (a path or a label), for error messages.

        Returns:
            The config.

        Raises:
            DataContractError: ``obj`` is not an object; a key is unknown; ``node_dim`` or
                ``edge_dim`` is missing; a dim, width, layer or head count is not an integer
                >= 1; ``dropout`` is not a number in [0, 1); ``pooling`` or
                ``attention_kernel`` is unknown; a flag is
                not a boolean; ``node_keep``/``edge_keep`` is neither null nor a list of
                column indices below the dim.
        """
        if not isinstance(obj, dict):
            raise DataContractError(source, "<file>", "a JSON object of NetConfig fields")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in obj if k not in known)
        if unknown:
            raise DataContractError(
                source, unknown[0], f"only NetConfig fields ({', '.join(known)})", "unknown key"
            )

        def whole(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for key in ("node_dim", "edge_dim", "hidden_dim", "num_layers", "heads"):
            if key not in obj:
                if key in ("node_dim", "edge_dim"):
                    raise DataContractError(source, key, "an integer >= 1 (required)", "missing")
                continue
            if not whole(obj[key]) or obj[key] < 1:
                raise DataContractError(source, key, "an integer >= 1", repr(obj[key])[:80])
        if "dropout" in obj:
            value = obj["dropout"]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise DataContractError(source, "dropout", "a number in [0, 1)", repr(value)[:80])
        if "pooling" in obj:
            value = obj["pooling"]
            known_pooling = isinstance(value, str)
            if known_pooling:
                try:
                    pooling_parts(value)
                except ValueError:
                    known_pooling = False
            if not known_pooling:
                raise DataContractError(
                    source,
                    "pooling",
                    "mean|max|add|sum|attention or a '+' join of mean|max|sum",
                    repr(value)[:80],
                )
        if "attention_kernel" in obj and obj["attention_kernel"] not in get_args(AttentionKernel):
            raise DataContractError(
                source, "attention_kernel", "pyg or fused", repr(obj["attention_kernel"])[:80]
            )
        for key in ("edge_layer_norm", "pooled_skip"):
            if key in obj and not isinstance(obj[key], bool):
                raise DataContractError(source, key, "true or false", repr(obj[key])[:80])
        for key, dim_key in (("node_keep", "node_dim"), ("edge_keep", "edge_dim")):
            keep, dim = obj.get(key), obj[dim_key]
            if keep is not None and (
                not isinstance(keep, list) or not all(whole(i) and 0 <= i < dim for i in keep)
            ):
                raise DataContractError(
                    source,
                    key,
                    f"null or a list of column indices in [0, {dim}) ({dim_key})",
                    repr(keep)[:80],
                )
        return cls(**obj)


class TopoQANet(nn.Module):
    r"""Edge-aware GATv2 regressor of interface quality (one DockQ estimate per graph).

    Standardised node and edge features are linearly encoded, passed through residual GATv2
    layers that attend with edge features (heads averaged), pooled per graph and joined with
    the graph's mean encoded edge features; an MLP maps that to a logit whose sigmoid is the
    DockQ estimate in [0, 1]. Returning the logit lets calibration rescale it later.

    ``pooling`` may join readouts with ``+`` (``mean+max``, ``mean+max+sum``): their outputs are
    concatenated, so the head's input grows by ``hidden_dim`` per part. With ``pooled_skip``
    the head also sees per-graph statistics of the (standardised, masked) inputs, bypassing the
    message passing: ``log1p`` of the node and edge counts, and per input column the graph mean
    and the signed ``log1p`` of the graph sum, LayerNorm-ed. Global composition and size are
    then available to the head directly, however few layers the network has.
    Dropout (``dropout``) acts on the attention weights and in the head, as in the seeds'
    network, so an imported config means what it meant there.

    Args:
        config: dims, widths and options; see :class:`NetConfig`.

    Shapes:
        - x: :math:`(|V|, \text{node\_dim})`, edge_index: :math:`(2, |E|)`,
          edge_attr: :math:`(|E|, \text{edge\_dim})`, batch: :math:`(|V|)`
        - output: logits :math:`(B)` for B graphs in the batch
        - head input: :math:`(B, (P + 1) \cdot \text{hidden\_dim} + S)` with P pooled parts
          and :math:`S = 2 + 2 \cdot (\text{node\_in} + \text{edge\_in})` with
          ``pooled_skip`` (node_in, edge_in: kept input columns), else :math:`S = 0`
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_dim
        self.node_norm = FeatureStandardizer(config.node_dim, config.node_keep)
        self.edge_norm = FeatureStandardizer(config.edge_dim, config.edge_keep)
        self.node_encoder = nn.Linear(self.node_norm.out_dim, hidden)
        self.edge_encoder = nn.Sequential(
            nn.Linear(self.edge_norm.out_dim, hidden),
            nn.LayerNorm(hidden) if config.edge_layer_norm else nn.Identity(),
        )
        self.convs = nn.ModuleList(
            GATv2Conv(
                hidden,
                hidden,
                heads=config.heads,
                concat=False,
                edge_dim=hidden,
                dropout=config.dropout,
                add_self_loops=False,
            )
            for _ in range(config.num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(config.num_layers))
        self.pool_parts = pooling_parts(config.pooling)
        self.attention_pool = (
            AttentionalAggregation(nn.Linear(hidden, 1)) if config.pooling == "attention" else None
        )
        self.skip_dim = (
            2 + 2 * (self.node_norm.out_dim + self.edge_norm.out_dim) if config.pooled_skip else 0
        )
        self.skip_norm = nn.LayerNorm(self.skip_dim) if config.pooled_skip else None
        self.head_in_dim = (len(self.pool_parts) + 1) * hidden + self.skip_dim
        self.head = nn.Sequential(
            nn.Linear(self.head_in_dim, hidden),
            nn.ELU(),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    @property
    def fused_attention(self) -> bool:
        """Whether the attention layers run graphqa's fused CPU kernel (``attention_kernel``;
        on a GPU they run PyG's layers)."""
        return self.config.attention_kernel == "fused" and all(map(supports, self.convs))

    def pool(self, h: Tensor, batch: Tensor, size: int) -> Tensor:
        """Per-graph readout, shape (B, P * hidden_dim): the P parts in pooling order."""
        if self.attention_pool is not None:
            return self.attention_pool(h, batch, dim_size=size)
        return torch.cat([POOL_FUNCTIONS[p](h, batch, size) for p in self.pool_parts], dim=-1)

    def graph_statistics(
        self, x: Tensor, edge_attr: Tensor, edge_batch: Tensor, batch: Tensor, size: int
    ) -> Tensor:
        """The skip path's raw per-graph statistics :math:`(B, S)` (before the LayerNorm).

        ``x`` and ``edge_attr`` are the standardised, masked inputs. Means describe
        composition, log-compressed sums describe amount (they scale with graph size).
        """
        node_count = scatter(x.new_ones(x.size(0)), batch, dim=0, dim_size=size, reduce="sum")
        edge_count = scatter(
            edge_attr.new_ones(edge_attr.size(0)), edge_batch, dim=0, dim_size=size, reduce="sum"
        )
        node_sum = scatter(x, batch, dim=0, dim_size=size, reduce="sum")
        edge_sum = scatter(edge_attr, edge_batch, dim=0, dim_size=size, reduce="sum")
        node_mean = node_sum / node_count.clamp(min=1).unsqueeze(-1)
        edge_mean = edge_sum / edge_count.clamp(min=1).unsqueeze(-1)
        return torch.cat(
            [
                torch.log1p(node_count).unsqueeze(-1),
                torch.log1p(edge_count).unsqueeze(-1),
                node_mean,
                signed_log1p(node_sum),
                edge_mean,
                signed_log1p(edge_sum),
            ],
            dim=-1,
        )

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int | None = None,
    ) -> Tensor:
        size = int(batch.max()) + 1 if num_graphs is None else num_graphs
        x_std, e_std = self.node_norm(x), self.edge_norm(edge_attr)
        h = self.node_encoder(x_std)
        edge_batch = batch[edge_index[0]]
        if self.fused_attention and x.device.type == "cpu":  # the loop below, other rounding
            plan = EdgePlan.of(edge_index, h.size(0))
            terms = EdgeTerms.of(self.edge_encoder, list(self.convs), e_std, edge_batch, size)
            for conv, norm, term in zip(self.convs, self.norms, terms.per_layer, strict=True):
                h = norm(h + nn.functional.elu(fused_gatv2(conv, h, plan, term)))
            edge_mean = terms.graph_mean
        else:
            e = self.edge_encoder(e_std)
            for conv, norm in zip(self.convs, self.norms, strict=True):
                h = norm(h + nn.functional.elu(conv(h, edge_index, e)))
            edge_mean = scatter(e, edge_batch, dim=0, dim_size=size, reduce="mean")
        parts = [self.pool(h, batch, size), edge_mean]
        if self.skip_norm is not None:
            stats = self.graph_statistics(x_std, e_std, edge_batch, batch, size)
            parts.append(self.skip_norm(stats))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)

    @torch.no_grad()
    def fit_standardizers(self, x: Tensor, edge_attr: Tensor) -> None:
        self.node_norm.fit(x)
        self.edge_norm.fit(edge_attr)


def build_net(config: NetConfig | dict[str, Any]) -> TopoQANet:
    """A fresh network, from a config or its stored dict (checkpoints, bundles).

    Args:
        config: the config, or a dict as :meth:`NetConfig.to_dict` writes it.

    Returns:
        The network, untrained (standardizers not fitted).

    Raises:
        DataContractError: ``config`` is a dict that :meth:`NetConfig.from_dict` refuses.
    """
    return TopoQANet(config if isinstance(config, NetConfig) else NetConfig.from_dict(config))
