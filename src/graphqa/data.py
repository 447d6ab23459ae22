"""Packed splits: one collated tensor file per split, so training never opens thousands of files.

A packed file is a plain dict of tensors and string lists (loadable with ``weights_only=True``):
node/edge features concatenated over graphs, local ``edge_index`` per graph, and ``node_ptr`` /
``edge_ptr`` offsets to slice graph ``i`` back out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from graphqa.contract import DataContractError, GraphRecord
from graphqa.layout import packed_path

PACKED_FORMAT = "graphqa.packed/1"
SPLITS = ("train", "val", "val_calib", "test")
#: Optional split (``paths.tuning_labels``), packed only when its label CSV has rows.
TUNING_SPLIT = "tuning"


@dataclass
class PackedSplit:
    """All graphs of one split in a handful of tensors."""

    keys: list[str]
    models: list[str]
    targets: list[str]
    capri: list[str]
    x: torch.Tensor  # float32 [sum N, node_dim]
    edge_index: torch.Tensor  # int64 [2, sum E], node indices local to each graph
    edge_attr: torch.Tensor  # float32 [sum E, edge_dim]
    node_ptr: torch.Tensor  # int64 [G + 1]
    edge_ptr: torch.Tensor  # int64 [G + 1]
    y: torch.Tensor  # float32 [G]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def target_names(self) -> list[str]:
        return sorted(set(self.targets))

    def graph(self, i: int, target_index: int = 0) -> Data:
        n0, n1 = int(self.node_ptr[i]), int(self.node_ptr[i + 1])
        e0, e1 = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        return Data(
            x=self.x[n0:n1],
            edge_index=self.edge_index[:, e0:e1],
            edge_attr=self.edge_attr[e0:e1],
            y=self.y[i : i + 1],
            target_id=torch.tensor([target_index]),
            graph_id=torch.tensor([i]),
        )

    def data_list(self) -> list[Data]:
        """Graphs as PyG ``Data`` views (no copies) with ``y`` and ``target_id``.

        (Not ``*_index``: PyG would offset such attributes by node counts when batching.)
        """
        index = {t: k for k, t in enumerate(self.target_names)}
        # One split per tensor (views, no copies) instead of per-graph indexing: building the
        # list is then dominated by PyG's Data constructor (benchmarks/load_packed.py).
        nodes = (self.node_ptr[1:] - self.node_ptr[:-1]).tolist()
        edges = (self.edge_ptr[1:] - self.edge_ptr[:-1]).tolist()
        xs, attrs = self.x.split(nodes), self.edge_attr.split(edges)
        edge_indices = self.edge_index.split(edges, dim=1)
        ys = self.y.view(-1, 1).unbind(0)
        target_ids = torch.tensor([index[t] for t in self.targets], dtype=torch.int64)
        graph_ids = torch.arange(len(self), dtype=torch.int64)
        graphs = []
        for i in range(len(self)):
            data = Data()
            # A fresh Data's store has no cached attributes to invalidate, so filling its
            # mapping directly equals Data(**fields) at a third of the cost (pinned PyG;
            # tests/test_module.py compares it with per-graph Data(...) field by field).
            data._store._mapping.update(
                x=xs[i],
                edge_index=edge_indices[i],
                edge_attr=attrs[i],
                y=ys[i],
                target_id=target_ids[i : i + 1],
                graph_id=graph_ids[i : i + 1],
            )
            graphs.append(data)
        return graphs

    def save(self, path: str | Path) -> None:
        torch.save({"format": PACKED_FORMAT, **self.__dict__}, path)

    @classmethod
    def load(cls, path: str | Path) -> PackedSplit:
        try:
            # Memory-mapped: tensors are read from the page cache when first touched instead
            # of copied up front (same values; the file is mapped copy-on-write).
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except FileNotFoundError:
            raise DataContractError(
                path, "<file>", "a packed split written by the `schema` stage", "no such file"
            ) from None
        if not isinstance(obj, dict) or obj.get("format") != PACKED_FORMAT:
            raise DataContractError(
                path,
                "format",
                PACKED_FORMAT,
                str(obj.get("format") if isinstance(obj, dict) else obj),
            )
        obj.pop("format")
        return cls(**obj)


def pack_graphs(records: Sequence[GraphRecord], graphs: Sequence[Data]) -> PackedSplit:
    """Collate validated graphs (same order as ``records``) into one :class:`PackedSplit`."""
    node_counts = [int(g.x.shape[0]) for g in graphs]
    edge_counts = [int(g.edge_index.shape[1]) for g in graphs]
    zero = torch.zeros(1, dtype=torch.int64)
    return PackedSplit(
        keys=[r.key for r in records],
        models=[r.model for r in records],
        targets=[r.target for r in records],
        capri=[r.capri for r in records],
        x=torch.cat([g.x for g in graphs]) if graphs else torch.zeros(0, 0),
        edge_index=(
            torch.cat([g.edge_index for g in graphs], dim=1)
            if graphs
            else torch.zeros(2, 0, dtype=torch.int64)
        ),
        edge_attr=torch.cat([g.edge_attr for g in graphs]) if graphs else torch.zeros(0, 0),
        node_ptr=torch.cat([zero, torch.tensor(node_counts, dtype=torch.int64).cumsum(0)]),
        edge_ptr=torch.cat([zero, torch.tensor(edge_counts, dtype=torch.int64).cumsum(0)]),
        y=torch.tensor([r.dockq for r in records], dtype=torch.float32),
    )


class EpochShuffleSampler(Sampler[int]):
    """Shuffle order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` on samplers that have it, so a run resumed from a checkpoint
    sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def sort_edges_by_target(
    edge_index: torch.Tensor, edge_attr: torch.Tensor | None, num_nodes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Edges reordered by (target, source) node, ``edge_attr`` permuted alongside.

    A permutation of the edges, so message passing computes the same function; PyG's
    aggregations are deterministic on CUDA only when the index they scatter into is sorted.
    """
    if edge_index.numel() == 0:
        return edge_index, edge_attr
    n = int(num_nodes) if num_nodes is not None else int(edge_index.max()) + 1
    key = edge_index[1] * n + edge_index[0]
    order = torch.argsort(key, stable=True)
    return edge_index[:, order], None if edge_attr is None else edge_attr[order]


class GraphQADataModule(L.LightningDataModule):
    """Serves packed splits as PyG mini-batches; shuffling is seeded for reproducibility."""

    def __init__(
        self, packed_dir: str | Path, batch_size: int = 32, num_workers: int = 0, seed: int = 222
    ) -> None:
        super().__init__()
        self.packed_dir = Path(packed_dir)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.splits: dict[str, PackedSplit] = {}
        self._lists: dict[str, list[Data]] = {}

    def split(self, name: str) -> PackedSplit:
        if name not in self.splits:
            self.splits[name] = PackedSplit.load(packed_path(self.packed_dir, name))
        return self.splits[name]

    def graphs(self, name: str) -> list[Data]:
        if name not in self._lists:
            self._lists[name] = self.split(name).data_list()
        return self._lists[name]

    def setup(self, stage: str | None = None) -> None:
        for name in ("train", "val"):
            self.graphs(name)

    def loader(self, name: str, shuffle: bool = False) -> DataLoader:
        graphs = self.graphs(name)
        sampler = EpochShuffleSampler(len(graphs), self.seed) if shuffle else None
        return DataLoader(
            graphs,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On CUDA, sort each batch's edges by target node: PyG's scatter aggregations are
        deterministic there only over a sorted index. CPU batches pass through untouched (the
        CPU path stays byte-identical)."""
        if isinstance(batch, Data | Batch) and batch.edge_index.is_cuda:
            batch.edge_index, batch.edge_attr = sort_edges_by_target(
                batch.edge_index, batch.edge_attr, batch.num_nodes
            )
        return batch

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
