"""Lightning callbacks of a training run: portable checkpoints, metrics.csv, tuning-split
scoring, compact progress.

Separate from :mod:`graphqa.train` so each callback can be tested (and reused, e.g. by the
throughput benchmark) without building a whole run.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch_geometric.data import Batch, Data

from graphqa.maths import metrics as qa
from graphqa.module import MONITOR

EPOCH_METRICS = (
    "train_loss",
    "val_loss",
    "val_pearson",
    "val_spearman",
    "val_mae",
    "val_regret",
    "val_target_spearman",
    "val_hit_rate",
    MONITOR,
    "lr",
)
#: Extra metrics.csv columns of a run that has a tuning split (after the usual ones).
TUNING_COLUMNS = tuple(qa.TUNING_METRICS)


class PortableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved state holds paths relative to its folder.

    Lightning stores absolute paths in every checkpoint; relative ones keep checkpoint bytes
    independent of where the repository is cloned (a DVC output must be byte-reproducible).
    """

    _PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        base = self.dirpath or "."

        def rel(p: str) -> str:
            return os.path.relpath(p, base) if p else p

        state["dirpath"] = "."
        for key in self._PATH_KEYS:
            state[key] = rel(state.get(key, ""))
        state["best_k_models"] = {rel(k): v for k, v in state.get("best_k_models", {}).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        base = self.dirpath or "."

        def absolute(p: str) -> str:
            return os.path.join(base, p) if p else p

        if state.get("dirpath") == ".":
            state["dirpath"] = base
            for key in self._PATH_KEYS:
                state[key] = absolute(state.get(key, ""))
            state["best_k_models"] = {
                absolute(k): v for k, v in state.get("best_k_models", {}).items()
            }
        super().load_state_dict(state)


class EpochMetricsCSV(Callback):
    """Appends one row per epoch to ``metrics.csv`` (after validation, when all are known)."""

    def __init__(self, path: str | Path, columns: tuple[str, ...] = EPOCH_METRICS) -> None:
        self.path = Path(path)
        self.columns = columns
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(metrics[k]) for k in self.columns if k in metrics})
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", *self.columns])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _csv_cell(v) for k, v in row.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def _csv_cell(value: float) -> str | int:
    return value if isinstance(value, int) else f"{value:.8g}"


def predict_graphs(
    pl_module: Any, graphs: list[Data], batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, true, target id) of ``graphs`` in order, through the module's own ``model_step``.

    Batches are collated exactly as the val DataLoader collates them (same graphs per batch,
    same order), so weights equal to the online model's give its ``val_*`` bit for bit. No
    DataLoader (creating one draws from the global RNG) and the RNG state is restored, so
    scoring never changes training. The module must be in eval mode (no dropout).
    """
    preds, trues, groups = [], [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[start : start + batch_size])
            _, pred = pl_module.model_step(batch.to(pl_module.device))
            preds.append(pred.double().cpu())
            trues.append(batch.y.double().cpu())
            groups.append(batch.target_id.cpu())
    pred, true, group = (torch.cat(v).numpy() for v in (preds, trues, groups))
    return pred, true, group


class TuningMetrics(Callback):
    """Scores the tuning split after each validation epoch and logs the ``tuning_*`` metrics.

    Batches are collated by hand (no DataLoader: creating one draws from the global RNG) and
    the RNG state is restored afterwards, so training is bit-identical with or without a tuning
    split. Predictions come from the module's own ``model_step``, as for val (the module is in
    eval mode at validation end, so no dropout).
    """

    def __init__(self, graphs: list[Data], batch_size: int, top_k: int) -> None:
        self.graphs, self.batch_size, self.top_k = graphs, batch_size, top_k
        #: targets with >= 2 models (recorded in summary.json for selection's fallback rule)
        self.groups = qa.ranking_groups(np.array([int(g.target_id) for g in graphs]))

    def predictions(self, pl_module: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pred, true, target id) over the whole tuning split, in split order."""
        return predict_graphs(pl_module, self.graphs, self.batch_size)

    def compute(self, pl_module: Any) -> dict[str, float]:
        return qa.tuning_metrics(*self.predictions(pl_module), top_k=self.top_k)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Each rank scores the whole (small) split, so values agree without a sync.
        pl_module.log_dict(self.compute(pl_module), sync_dist=False)


class CompactProgress(Callback):
    """One mid-epoch line (25/50/75%) and a one-line end-of-epoch summary."""

    def __init__(self) -> None:
        self.best: float | None = None
        self._marks: dict[int, str] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = int(trainer.num_training_batches)
        self._marks = {}
        for pct in (25, 50, 75):  # tiny epochs may merge marks; keep the last label
            self._marks[max(1, math.ceil(total * pct / 100))] = f"{pct}%"
        print(f"epoch {trainer.current_epoch:3d} |", end="", flush=True)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx + 1 in self._marks:
            print(f" {self._marks[batch_idx + 1]}", end="", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        score = float(m[MONITOR])
        self.best = score if self.best is None or score < self.best else self.best
        print(
            f" | train_loss {float(m.get('train_loss', float('nan'))):.4f}"
            f" val_loss {float(m['val_loss']):.4f} val_spearman {float(m['val_spearman']):.3f}"
            f" {MONITOR} {score:.4f} (best {self.best:.4f})",
            flush=True,
        )
