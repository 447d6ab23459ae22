"""Stage `cv@<fold>`: the GNN recipe trained without a fold predicts it, blind to its labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphqa.config import Params
from graphqa.cv import concat_splits, cv_stage, pooled_packed, take_graphs
from graphqa.data import PackedSplit
from graphqa.maths.folds import row_folds
from graphqa.oof import OOF_COLUMNS, oof_path, read_oof


def _same(a: PackedSplit, b: PackedSplit) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(a.__dict__.values(), b.__dict__.values(), strict=True)
    )


def test_take_and_concat_keep_every_graph_intact(tiny_schema_dir: Path) -> None:
    split = PackedSplit.load(tiny_schema_dir / "packed" / "train.pt")
    rows = np.arange(len(split))
    assert _same(take_graphs(split, rows), split)
    first, rest = take_graphs(split, rows[:3]), take_graphs(split, rows[3:])
    assert _same(concat_splits([first, rest]), split)
    picked = take_graphs(split, np.array([4, 1]))
    for i, j in enumerate([4, 1]):
        a, b = picked.graph(i), split.graph(j)
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.y, b.y)


def _relabelled(schema_dir: Path, out: Path, target: str, seed: int) -> Path:
    """A copy of a schema folder where ``target``'s labels are permuted (its best kept)."""
    shutil.copytree(schema_dir, out)
    for path in (out / "packed").glob("*.pt"):
        split = PackedSplit.load(path)
        rows = [i for i, t in enumerate(split.targets) if t == target]
        if rows:
            y = split.y.clone()
            order = np.random.default_rng(seed).permutation(len(rows))
            while len(rows) > 1 and (order == np.arange(len(rows))).all():
                order = np.roll(order, 1)
            y[rows] = split.y[[rows[k] for k in order]]
            split.y = y
            path.unlink()
            split.save(path)
    return out


@pytest.mark.slow
def test_a_folds_predictions_do_not_depend_on_its_own_labels(
    tiny_params: Params, tiny_schema_dir: Path, tmp_path: Path
) -> None:
    pool = pooled_packed(tiny_schema_dir)
    targets = np.asarray(pool.targets)
    fold = row_folds(targets, pool.y.double().numpy(), tiny_params.cv.folds, tiny_params.cv.seed)
    summary = cv_stage(
        params=tiny_params, fold=0, schema_dir=tiny_schema_dir, out_dir=tmp_path / "a"
    )
    oof = pd.read_csv(tmp_path / "a" / "oof.csv", dtype={"key": str, "target": str})
    assert tuple(oof.columns) == OOF_COLUMNS
    assert sorted(oof["key"]) == sorted(np.asarray(pool.keys)[fold == 0])
    held = set(summary["held_targets"])
    assert held == set(targets[fold == 0])
    assert not held & set(summary["inner_targets"])
    assert summary["n_graphs"]["fit"] + summary["n_graphs"]["inner"] + len(oof) == len(pool)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["held_targets"] == len(held)

    # permute one held target's labels: the fold model never saw them, nothing moves
    relabelled = _relabelled(tiny_schema_dir, tmp_path / "s1", sorted(held)[0], seed=0)
    cv_stage(params=tiny_params, fold=0, schema_dir=relabelled, out_dir=tmp_path / "b")
    again = pd.read_csv(tmp_path / "b" / "oof.csv", dtype={"key": str, "target": str})
    assert again["logit"].tolist() == oof["logit"].tolist()
    # the same change to a target the fold model fitted on does move them
    fitted = sorted(set(targets[(fold != 0) & (fold != 1)]))[0]
    moved = _relabelled(tiny_schema_dir, tmp_path / "s2", fitted, seed=0)
    cv_stage(params=tiny_params, fold=0, schema_dir=moved, out_dir=tmp_path / "c")
    other = pd.read_csv(tmp_path / "c" / "oof.csv", dtype={"key": str, "target": str})
    assert other["logit"].tolist() != oof["logit"].tolist()


def test_reading_folds_names_a_missing_one(tmp_path: Path) -> None:
    path = oof_path(tmp_path, 0)
    path.parent.mkdir(parents=True)
    pd.DataFrame({c: [] for c in OOF_COLUMNS}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"1/oof.csv.*stage cv@1's predictions"):
        read_oof(tmp_path, [0, 1])
