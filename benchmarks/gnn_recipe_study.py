"""GNN recipe study (issue 13): which model options help, chosen on val only.

Why: pooling, the pooled-feature skip path and regularisation are switchable
(``model.pooling_type``, ``model.pooled_skip``, ``model.dropout``, ``optimizer.weight_decay``);
the defaults should follow evidence. This script trains every config x seed with graphqa's own
:func:`graphqa.train.train_stage` (the `train` stage's code path: same data module, standardisers,
selection metric, checkpoints) into a temporary folder, rescores the run's selected checkpoint on
the val and test splits, and prints mean +- sd over seeds of the ranking loss (mean per-target
``best_dockq - top1_dockq``, lower is better) and the Spearman correlation on each split.

The winner is chosen from **val numbers only** (``--select-by``, default val ranking loss, ties
broken by val Spearman); the test columns are reported for the record and never used to choose.

Usage::

    .venv/bin/python benchmarks/gnn_recipe_study.py [--schema-dir data/schema] \\
        [--seeds 0 1] [--epochs 8] [--configs baseline mean+max ...] [--set key=value ...]

``--schema-dir`` is only read (its ``packed/`` splits and ``feature_metadata.json``).
"""

from __future__ import annotations  # noqa: I001  (graphqa first: it pins torch's CPU path)

import graphqa  # noqa: F401

import argparse
import logging
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from graphqa.config import Params, load_params, parse_override, parse_params
from graphqa.data import GraphQADataModule
from graphqa.maths.metrics import split_metrics
from graphqa.module import load_module
from graphqa.train import train_stage

#: Config name -> dotted overrides on top of params.yaml (and the budget overrides).
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {"model.pooling_type": "mean", "model.pooled_skip": False},
    "mean+max": {"model.pooling_type": "mean+max", "model.pooled_skip": False},
    "mean+max+skip": {"model.pooling_type": "mean+max", "model.pooled_skip": True},
    "mean+max+skip+reg": {
        "model.pooling_type": "mean+max",
        "model.pooled_skip": True,
        "model.dropout": 0.25,
        "optimizer.weight_decay": 3e-2,
    },
    "reg": {
        "model.pooling_type": "mean",
        "model.pooled_skip": False,
        "model.dropout": 0.25,
        "optimizer.weight_decay": 3e-2,
    },
}

#: The reported metrics: (column, split, key in split_metrics, lower is better).
METRICS = (
    ("val_rank_loss", "val", "regret", True),
    ("val_spearman", "val", "spearman", False),
    ("test_rank_loss", "test", "regret", True),
    ("test_spearman", "test", "spearman", False),
)


@torch.no_grad()
def score_split(checkpoint: Path, data: GraphQADataModule, split: str) -> dict[str, float]:
    """Ranking loss and Spearman of a checkpoint's DockQ estimates on one packed split."""
    net = load_module(checkpoint).net.eval()
    preds, trues, groups = [], [], []
    for batch in DataLoader(data.graphs(split), batch_size=64):
        logits = net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
        preds.append(torch.sigmoid(logits).double())
        trues.append(batch.y.double())
        groups.append(batch.target_id)
    pred, true = torch.cat(preds).numpy(), torch.cat(trues).numpy()
    values = split_metrics(pred, true, torch.cat(groups).numpy(), 0.23, 10)
    return {"regret": values["regret"], "spearman": values["spearman"]}


def run_one(
    name: str,
    seed: int,
    schema_dir: Path,
    base: Params,
    budget: dict[str, Any],
    data: GraphQADataModule,
    root: Path,
) -> dict[str, float]:
    params = parse_params(base.to_dict(), {**budget, **CONFIGS[name]})
    run_dir = root / f"{name}-{seed}"
    summary = train_stage(
        params=params, schema_dir=schema_dir, run_dir=run_dir, seed=seed, run_name=name
    )
    checkpoint = run_dir / summary["checkpoint"]
    row: dict[str, float] = {"best_epoch": float(summary["best_epoch"])}
    scores = {split: score_split(checkpoint, data, split) for split in ("val", "test")}
    for column, split, key, _ in METRICS:
        row[column] = scores[split][key]
    return row


def _mean_sd(values: list[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.fmean(values), sd


def table(results: dict[str, list[dict[str, float]]]) -> str:
    head = f"{'config':<20}" + "".join(f"{c:>18}" for c, *_ in METRICS)
    lines = [head, "-" * len(head)]
    for name, rows in results.items():
        cells = []
        for column, *_ in METRICS:
            mean, sd = _mean_sd([r[column] for r in rows])
            cells.append(f"{mean:.4f}±{sd:.4f}" if not math.isnan(sd) else f"{mean:.4f}")
        lines.append(f"{name:<20}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def choose(results: dict[str, list[dict[str, float]]], select_by: str) -> str:
    """The val-chosen config: best mean val ranking loss (or Spearman), other val metric as
    tie-break. Test numbers are never looked at here."""

    def key(name: str) -> tuple[float, float]:
        rl = statistics.fmean(r["val_rank_loss"] for r in results[name])
        sp = statistics.fmean(r["val_spearman"] for r in results[name])
        return (rl, -sp) if select_by == "rank_loss" else (-sp, rl)

    return min(results, key=key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema-dir", type=Path, default=Path("data/schema"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=8, help="trainer.max_epochs per run")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--select-by", choices=["rank_loss", "spearman"], default="rank_loss")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override"
    )
    args = parser.parse_args(argv)
    budget: dict[str, Any] = {
        "trainer.max_epochs": args.epochs,
        "trainer.num_threads": 1,
        "logging.progress": "none",
        "mlflow.enabled": False,
    }
    budget.update(dict(parse_override(item) for item in args.set))
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    # read once: every run starts from the same params even if params.yaml is edited meanwhile
    base = load_params(args.params)
    data = GraphQADataModule(args.schema_dir / "packed")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.configs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gnn_recipe_") as tmp:
        for name in args.configs:
            for seed in args.seeds:
                row = run_one(name, seed, args.schema_dir, base, budget, data, Path(tmp))
                results[name].append(row)
                print(
                    f"[{time.perf_counter() - started:6.0f}s] {name} seed {seed}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in row.items()),
                    flush=True,
                )
    print()
    print(
        f"budget: {budget}; seeds {args.seeds}; mean±sd over seeds; "
        "rank_loss = mean per-target best - top1 DockQ"
    )
    print(table(results))
    chosen = choose(results, args.select_by)
    print(f"val-chosen config (by val {args.select_by}; test not used): {chosen}")
    print(f"overrides: {CONFIGS[chosen]}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
