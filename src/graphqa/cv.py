"""Stage ``cv@<fold>``: the GNN recipe's out-of-fold predictions, the evidence it is judged by.

Why: the GNN the pipeline ships was early-stopped, checkpointed, seed-picked, averaged and
fine-tuned on val, so its val numbers are in-sample (optimistic). Here the recipe in
``params.yaml`` (the one the sweep trains) is refitted once per fold of every pooled labelled
target (train, val and tuning; the folds of :func:`graphqa.maths.folds.row_folds`, the same
ones the ``trees`` stage uses). For held fold ``k`` the network trains on the other folds but
the next, early stopping and the checkpoint choice watch that inner fold
(:func:`graphqa.maths.folds.fold_roles`), and the chosen checkpoint predicts fold ``k``. So no
out-of-fold prediction comes from a model that saw its target in fitting, stopping or choosing.

Stage ``scorer`` gathers every fold's ``oof.csv`` and judges the GNN on them next to the trees
and the blend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from graphqa.config import Params
from graphqa.contract import DataContractError
from graphqa.data import PackedSplit
from graphqa.files import atomic_dir, write_json
from graphqa.layout import METRICS, SUMMARY, RunPaths, SchemaPaths
from graphqa.maths.folds import fold_roles, row_folds
from graphqa.maths.metrics import per_target_table, rounded, spearman
from graphqa.module import load_module
from graphqa.oof import OOF_FILE, pooled_splits
from graphqa.scoring import packed_logits
from graphqa.selection import FALLBACK_METRIC, rank, ranking_metric, run_candidates
from graphqa.train import train_stage


def take_graphs(split: PackedSplit, rows: np.ndarray) -> PackedSplit:
    """The graphs ``rows`` of a packed split (in that order) as a packed split of their own.

    Args:
        split: the source split.
        rows: graph indices.

    Returns:
        A new packed split (copied tensors; edge indices stay local to each graph).
    """
    rows = np.asarray(rows, dtype=np.int64)
    node_ptr, edge_ptr = split.node_ptr.tolist(), split.edge_ptr.tolist()
    nodes = [torch.arange(node_ptr[i], node_ptr[i + 1]) for i in rows]
    edges = [torch.arange(edge_ptr[i], edge_ptr[i + 1]) for i in rows]
    node_idx = torch.cat(nodes) if nodes else torch.zeros(0, dtype=torch.int64)
    edge_idx = torch.cat(edges) if edges else torch.zeros(0, dtype=torch.int64)
    n_counts = torch.tensor([0] + [len(n) for n in nodes], dtype=torch.int64)
    e_counts = torch.tensor([0] + [len(e) for e in edges], dtype=torch.int64)
    pick = torch.as_tensor(rows)
    return PackedSplit(
        keys=[split.keys[i] for i in rows],
        models=[split.models[i] for i in rows],
        targets=[split.targets[i] for i in rows],
        capri=[split.capri[i] for i in rows],
        x=split.x[node_idx].clone(),
        edge_index=split.edge_index[:, edge_idx].clone(),
        edge_attr=split.edge_attr[edge_idx].clone(),
        node_ptr=torch.cumsum(n_counts, 0),
        edge_ptr=torch.cumsum(e_counts, 0),
        y=split.y[pick].clone(),
    )


def concat_splits(splits: list[PackedSplit]) -> PackedSplit:
    """Packed splits one after another (graph order kept)."""

    def ptr(parts: list[torch.Tensor]) -> torch.Tensor:
        counts = torch.cat([p[1:] - p[:-1] for p in parts])
        return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])

    return PackedSplit(
        keys=[k for s in splits for k in s.keys],
        models=[m for s in splits for m in s.models],
        targets=[t for s in splits for t in s.targets],
        capri=[c for s in splits for c in s.capri],
        x=torch.cat([s.x for s in splits]),
        edge_index=torch.cat([s.edge_index for s in splits], dim=1),
        edge_attr=torch.cat([s.edge_attr for s in splits]),
        node_ptr=ptr([s.node_ptr for s in splits]),
        edge_ptr=ptr([s.edge_ptr for s in splits]),
        y=torch.cat([s.y for s in splits]),
    )


def pooled_packed(schema_dir: str | Path) -> PackedSplit:
    """Every labelled graph the out-of-fold evidence uses: packed train, val and (when packed)
    tuning, in that order (the row order of the ``trees`` stage's pooled table)."""
    paths = SchemaPaths(Path(schema_dir))
    return concat_splits([PackedSplit.load(paths.packed(s)) for s in pooled_splits(schema_dir)])


def _fold_schema_dir(root: Path, metadata: Path, fit: PackedSplit, inner: PackedSplit) -> Path:
    """A schema folder whose train split is the fitted folds and whose val is the inner fold,
    so the unchanged training code serves the fold (no tuning split: nothing else is seen)."""
    paths = SchemaPaths(root)
    paths.packed_dir.mkdir(parents=True)
    paths.feature_metadata.write_bytes(metadata.read_bytes())
    fit.save(paths.packed("train"))
    inner.save(paths.packed("val"))
    return root


def chosen_checkpoint(run_dir: Path, params: Params) -> tuple[str, Path]:
    """The fold run's checkpoint by the sweep's own rule (``selection.primary_metric`` on the
    inner fold; a ``tuning_*`` metric falls back to val_loss: folds have no tuning split).

    Returns:
        The candidate's name (``cv`` or ``cv:averaged``) and its checkpoint.
    """
    cfg = params.selection
    metric = ranking_metric(cfg, fallback=False)
    if metric.startswith("tuning_"):
        metric = FALLBACK_METRIC
    best = rank(run_candidates(run_dir, "cv"), metric)[0]
    path = Path(best.checkpoint) if best.checkpoint else RunPaths(run_dir).checkpoints / "best.ckpt"
    return best.name, path


def cv_stage(
    *, params: Params, fold: int, schema_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage worker for ``cv@<fold>``: train the GNN recipe without fold ``fold`` and predict it.

    Reads ``<schema_dir>/feature_metadata.json`` and ``<schema_dir>/packed/{train,val}.pt``
    (and ``tuning.pt`` when packed), and ``feature_mask.path``. Trains in a temporary folder
    (its checkpoints are not kept: only the evidence is). Writes into ``out_dir`` (atomic swap):
    ``oof.csv`` (key, target, fold, DockQ, logit of every held graph), ``summary.json`` (fold
    sizes, held and inner targets, chosen checkpoint, epochs) and ``metrics.json`` (the held
    fold's ranking loss and Spearman).

    Args:
        params: the params (the training recipe, ``cv:`` and ``selection:``).
        fold: the held fold (one of ``cv.fold_ids``).
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``summary.json``.

    Raises:
        DataContractError: ``fold`` is not a configured fold id.
    """
    n_folds = params.cv.folds
    if fold not in params.cv.fold_ids:
        raise DataContractError(
            "params.yaml", "cv.fold_ids", f"a fold id among {params.cv.fold_ids}", str(fold)
        )
    schema_paths = SchemaPaths(Path(schema_dir))
    pool = pooled_packed(schema_dir)
    labels = pool.y.double().numpy()
    folds = row_folds(np.asarray(pool.targets), labels, n_folds, params.cv.seed)
    role = fold_roles(folds, fold, n_folds)
    rows = {name: np.flatnonzero(mask) for name, mask in role.items()}
    held = take_graphs(pool, rows["held"])
    with tempfile.TemporaryDirectory(prefix="graphqa-cv-") as tmp:
        fold_schema = _fold_schema_dir(
            Path(tmp) / "schema",
            schema_paths.feature_metadata,
            take_graphs(pool, rows["fit"]),
            take_graphs(pool, rows["inner"]),
        )
        run_dir = Path(tmp) / "run"
        run = train_stage(
            params=params, schema_dir=fold_schema, run_dir=run_dir, run_name=f"cv{fold}"
        )
        name, checkpoint = chosen_checkpoint(run_dir, params)
        logits = packed_logits(load_module(checkpoint).net, held).numpy()
    true = held.y.double().numpy()
    table = per_target_table(logits, true, np.asarray(held.targets))
    frame = pd.DataFrame(
        {
            "key": held.keys,
            "target": held.targets,
            "fold": fold,
            "dockq": np.round(true, 6),
            "logit": np.round(logits, 6),
        }
    )
    summary = {
        "fold": fold,
        "folds": n_folds,
        "seed": params.cv.seed,
        "inner_fold": (fold + 1) % n_folds,
        "n_graphs": {name: len(r) for name, r in rows.items()},
        "held_targets": sorted(set(held.targets)),
        "inner_targets": sorted({pool.targets[i] for i in rows["inner"]}),
        "checkpoint": name,
        "epochs_trained": run["metrics"].get("epochs_trained"),
        "best_epoch": run["metrics"].get(
            "ema_best_epoch" if name.endswith(":averaged") else "best_epoch"
        ),
        "stopping": "early stopping and checkpoint choice on the inner fold",
    }
    metrics = {
        "held_ranking_loss": rounded(float(table["ranking_loss"].mean())),
        "held_spearman_pooled": rounded(spearman(logits, true)),
        "held_targets": len(table),
    }
    with atomic_dir(out_dir) as out:
        (out / OOF_FILE).write_text(frame.to_csv(index=False, lineterminator="\n"))
        write_json(out / SUMMARY, summary)
        write_json(out / METRICS, metrics)
    return summary
