"""Pooled graph features: one fixed-length row per graph for models that take no graph.

A reference ranker (and later a tree model as a stage of its own) needs to know what plain
tabular statistics of a graph already predict, so a user can see what message passing adds.
Per graph: ``n_nodes``, ``n_edges`` and, for every node and edge column of the schema, the mean,
sum and max over the graph plus ``log1p`` of the sum (sign-preserving, ``sign(s) log1p(|s|)``,
so standardised columns with negative sums stay finite). Graphs without nodes or edges get 0
for that block. Everything is vectorised over a whole packed split (segment sums/max with
``index_add_``/``scatter_reduce``), in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch

from graphqa.contract import DataContractError
from graphqa.data import PackedSplit
from graphqa.schema import FeatureSchema

#: Statistics per column, in column-block order of :func:`pooled_feature_names`.
POOLED_STATS = ("mean", "sum", "max", "log1p_sum")


def pooled_feature_names(schema: FeatureSchema) -> list[str]:
    """Names of the pooled columns: ``n_nodes``, ``n_edges``, ``node_<stat>:<column>``...,
    ``edge_<stat>:<column>``..., stats in :data:`POOLED_STATS` order, columns in schema
    order."""
    names = ["n_nodes", "n_edges"]
    for kind, columns in (("node", schema.node_columns), ("edge", schema.edge_columns)):
        names += [f"{kind}_{stat}:{column}" for stat in POOLED_STATS for column in columns]
    return names


def _segment_stats(values: Tensor, ptr: Tensor) -> Tensor:
    """``[G, 4 * D]``: mean, sum, max and signed log1p(sum) of each column per segment."""
    values = values.double()
    counts = (ptr[1:] - ptr[:-1]).to(torch.int64)
    n_graphs, dim = len(counts), values.shape[1]
    segment = torch.repeat_interleave(torch.arange(n_graphs), counts)
    sums = torch.zeros(n_graphs, dim, dtype=torch.float64).index_add_(0, segment, values)
    maxes = torch.zeros(n_graphs, dim, dtype=torch.float64).scatter_reduce_(
        0, segment[:, None].expand(-1, dim), values, reduce="amax", include_self=False
    )  # segments without rows keep their initial 0
    means = sums / counts.clamp(min=1)[:, None].double()
    log_sums = torch.sign(sums) * torch.log1p(sums.abs())
    return torch.cat([means, sums, maxes, log_sums], dim=1)


def pooled_features(x: Tensor, edge_attr: Tensor, node_ptr: Tensor, edge_ptr: Tensor) -> np.ndarray:
    """Pooled rows of consecutive graphs whose nodes/edges are delimited by ``*_ptr``
    (``[G + 1]`` offsets, as in :class:`~graphqa.data.PackedSplit`)."""
    if len(node_ptr) != len(edge_ptr):
        raise ValueError(f"node_ptr and edge_ptr differ: {len(node_ptr)} != {len(edge_ptr)}")
    n_nodes = (node_ptr[1:] - node_ptr[:-1]).double()[:, None]
    n_edges = (edge_ptr[1:] - edge_ptr[:-1]).double()[:, None]
    table = torch.cat(
        [n_nodes, n_edges, _segment_stats(x, node_ptr), _segment_stats(edge_attr, edge_ptr)], dim=1
    )
    return table.numpy()


def _check_dims(schema: FeatureSchema, x: Tensor, edge_attr: Tensor, source: str) -> None:
    if x.shape[1] != schema.node_dim:
        raise DataContractError(source, "x", f"{schema.node_dim} node columns", str(x.shape[1]))
    if edge_attr.shape[1] != schema.edge_dim:
        raise DataContractError(
            source, "edge_attr", f"{schema.edge_dim} edge columns", str(edge_attr.shape[1])
        )


def pooled_split(
    split: PackedSplit, schema: FeatureSchema, source: str = "packed split"
) -> np.ndarray:
    """Pooled features of every graph of a packed split, in split order."""
    _check_dims(schema, split.x, split.edge_attr, source)
    return pooled_features(split.x, split.edge_attr, split.node_ptr, split.edge_ptr)


def pooled_batch(batch: Batch, schema: FeatureSchema, source: str = "graph batch") -> np.ndarray:
    """Pooled features of a PyG ``Batch`` (graphs in batch order), e.g. while streaming a
    graph folder: edges are stored graph after graph, so their owners give the offsets."""
    _check_dims(schema, batch.x, batch.edge_attr, source)
    owner = batch.batch[batch.edge_index[0]]
    edge_counts = torch.bincount(owner, minlength=int(batch.num_graphs))
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), edge_counts.cumsum(0)])
    return pooled_features(batch.x, batch.edge_attr, batch.ptr, edge_ptr)
