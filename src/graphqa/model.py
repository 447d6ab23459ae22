"""TopoQA-style edge-aware graph attention regressor, sized from the resolved schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import AttentionalAggregation, GATv2Conv
from torch_geometric.nn.pool import global_add_pool, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

Pooling = Literal["mean", "max", "add", "attention"]


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> NetConfig:
        return cls(**obj)


class TopoQANet(nn.Module):
    r"""Edge-aware GATv2 regressor of interface quality (one DockQ estimate per graph).

    Standardised node and edge features are linearly encoded, passed through residual GATv2
    layers that attend with edge features (heads averaged), pooled per graph and joined with
    the graph's mean encoded edge features; an MLP maps that to a logit whose sigmoid is the
    DockQ estimate in [0, 1]. Returning the logit lets calibration rescale it later.

    Args:
        config: dims, widths and options; see :class:`NetConfig`.

    Shapes:
        - x: :math:`(|V|, \text{node\_dim})`, edge_index: :math:`(2, |E|)`,
          edge_attr: :math:`(|E|, \text{edge\_dim})`, batch: :math:`(|V|)`
        - output: logits :math:`(B)` for B graphs in the batch
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
        self.attention_pool = (
            AttentionalAggregation(nn.Linear(hidden, 1)) if config.pooling == "attention" else None
        )
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.ELU(),
            nn.Dropout(config.dropout),
            nn.Linear(hidden, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def pool(self, h: Tensor, batch: Tensor, size: int) -> Tensor:
        if self.attention_pool is not None:
            return self.attention_pool(h, batch, dim_size=size)
        pool_fn = {"mean": global_mean_pool, "max": global_max_pool, "add": global_add_pool}[
            self.config.pooling
        ]
        return pool_fn(h, batch, size)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int | None = None,
    ) -> Tensor:
        size = int(batch.max()) + 1 if num_graphs is None else num_graphs
        h = self.node_encoder(self.node_norm(x))
        e = self.edge_encoder(self.edge_norm(edge_attr))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = norm(h + nn.functional.elu(conv(h, edge_index, e)))
        graph_h = self.pool(h, batch, size)
        graph_e = scatter(e, batch[edge_index[0]], dim=0, dim_size=size, reduce="mean")
        return self.head(torch.cat([graph_h, graph_e], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def fit_standardizers(self, x: Tensor, edge_attr: Tensor) -> None:
        self.node_norm.fit(x)
        self.edge_norm.fit(edge_attr)


def build_net(config: NetConfig | dict[str, Any]) -> TopoQANet:
    return TopoQANet(config if isinstance(config, NetConfig) else NetConfig.from_dict(config))
