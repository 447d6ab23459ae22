"""Pooled graph features on hand-built graphs, packed and streamed alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from graphqa.contract import DataContractError
from graphqa.data import PackedSplit
from graphqa.pooled import pooled_batch, pooled_feature_names, pooled_split
from graphqa.schema import FeatureSchema

SCHEMA = FeatureSchema(node_columns=["a", "b"], edge_columns=["d"])

# Graph 0: 4 nodes, 3 edges. Node sums [6, -4], means [1.5, -1], maxes [3, 4];
#   edge sum 1, mean 1/3, max 1.5.
# Graph 1: 2 nodes, no edges. Node sums [-4, 2], means [-2, 1], maxes [-1, 1] (an all-negative
#   column keeps its negative max); the edge block is 0.
X0 = torch.tensor([[1.0, -2.0], [3.0, 0.0], [0.0, 4.0], [2.0, -6.0]])
E0 = torch.tensor([[0, 1, 2], [1, 2, 3]])
A0 = torch.tensor([[0.5], [1.5], [-1.0]])
X1 = torch.tensor([[-1.0, 1.0], [-3.0, 1.0]])
L = math.log1p
EXPECTED = np.array(
    [
        # n_nodes, n_edges, mean a b, sum a b, max a b, log1p_sum a b, edge mean sum max log1p
        [4, 3, 1.5, -1, 6, -4, 3, 4, L(6), -L(4), 1 / 3, 1, 1.5, L(1)],
        [2, 0, -2, 1, -4, 2, -1, 1, -L(4), L(2), 0, 0, 0, 0],
    ]
)


def _split() -> PackedSplit:
    return PackedSplit(
        keys=["T/T_a", "T/T_b"],
        models=["T_a", "T_b"],
        targets=["T", "T"],
        capri=["", ""],
        x=torch.cat([X0, X1]),
        edge_index=E0,
        edge_attr=A0,
        node_ptr=torch.tensor([0, 4, 6]),
        edge_ptr=torch.tensor([0, 3, 3]),
        y=torch.tensor([0.5, 0.1]),
    )


def test_names_follow_the_schema() -> None:
    names = pooled_feature_names(SCHEMA)
    assert names == [
        "n_nodes",
        "n_edges",
        "node_mean:a",
        "node_mean:b",
        "node_sum:a",
        "node_sum:b",
        "node_max:a",
        "node_max:b",
        "node_log1p_sum:a",
        "node_log1p_sum:b",
        "edge_mean:d",
        "edge_sum:d",
        "edge_max:d",
        "edge_log1p_sum:d",
    ]
    assert len(names) == EXPECTED.shape[1]


def test_pooled_split_by_hand() -> None:
    out = pooled_split(_split(), SCHEMA)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, EXPECTED, rtol=1e-12, atol=1e-12)


def test_streamed_batch_gives_the_same_rows() -> None:
    batch = Batch.from_data_list(
        [
            Data(x=X0, edge_index=E0, edge_attr=A0),
            Data(x=X1, edge_index=torch.zeros(2, 0, dtype=torch.int64), edge_attr=A0[:0]),
        ]
    )
    np.testing.assert_allclose(pooled_batch(batch, SCHEMA), EXPECTED, rtol=1e-12, atol=1e-12)


def test_wrong_width_is_refused_naming_the_columns() -> None:
    other = FeatureSchema(node_columns=["a", "b", "c"], edge_columns=["d"])
    with pytest.raises(DataContractError, match=r"'x'.*3 node columns, got 2"):
        pooled_split(_split(), other, "packed/train.pt")
