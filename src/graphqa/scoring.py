"""Scoring a packed split in large slices, without building per-graph objects.

Used wherever a trained network is evaluated on a split the pipeline packed (FLT permutation
scores, calibration); new graph folders go through :mod:`graphqa.predict` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphqa.data import PackedSplit
from graphqa.module import load_module


@dataclass(frozen=True)
class PackedSlice:
    """Graphs ``start:stop`` of a packed split as the network's batch tensors.

    Attributes:
        start: index of the slice's first graph in the split.
        stop: one past its last graph.
        x: node features of the slice's graphs.
        edge_index: edges, node indices local to the slice.
        edge_attr: edge features.
        batch: graph index (0-based within the slice) of every node.
    """

    start: int
    stop: int
    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor


def packed_slices(
    split: PackedSplit,
    batch_graphs: int = 256,
    x: Tensor | None = None,
    edge_attr: Tensor | None = None,
) -> Iterator[PackedSlice]:
    """Consecutive graph slices of a packed split as ready-made batch tensors; ``x`` and
    ``edge_attr`` may substitute the split's own (e.g. with shuffled columns)."""
    x = split.x if x is None else x
    edge_attr = split.edge_attr if edge_attr is None else edge_attr
    for start in range(0, len(split), batch_graphs):
        stop = min(start + batch_graphs, len(split))
        n0, n1 = int(split.node_ptr[start]), int(split.node_ptr[stop])
        e0, e1 = int(split.edge_ptr[start]), int(split.edge_ptr[stop])
        nodes = split.node_ptr[start + 1 : stop + 1] - split.node_ptr[start:stop]
        edges = split.edge_ptr[start + 1 : stop + 1] - split.edge_ptr[start:stop]
        offsets = torch.repeat_interleave(split.node_ptr[start:stop] - n0, edges)
        yield PackedSlice(
            start=start,
            stop=stop,
            x=x[n0:n1],
            edge_index=split.edge_index[:, e0:e1] + offsets,
            edge_attr=edge_attr[e0:e1],
            batch=torch.repeat_interleave(torch.arange(stop - start), nodes),
        )


@torch.no_grad()
def packed_logits(
    net: torch.nn.Module,
    split: PackedSplit,
    batch_graphs: int = 256,
    x: Tensor | None = None,
    edge_attr: Tensor | None = None,
) -> Tensor:
    """Logits for every graph of a packed split (eval mode), float64."""
    net = net.eval()
    out = [
        net(s.x, s.edge_index, s.edge_attr, s.batch, s.stop - s.start).double()
        for s in packed_slices(split, batch_graphs, x, edge_attr)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def split_predictions(
    checkpoint: str | Path, split: PackedSplit, batch_graphs: int = 256
) -> np.ndarray:
    """Predicted scores (sigmoid of the network's logits, float64) of a checkpoint for every
    graph of a packed split, in the split's order."""
    net = load_module(checkpoint).net
    return torch.sigmoid(packed_logits(net, split, batch_graphs)).numpy()
