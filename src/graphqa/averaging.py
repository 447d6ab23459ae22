"""Weight averaging of a training run (``variance_reduction``), scored as ``ema_*``.

Why: one checkpoint carries the noise of its last mini-batches; an average of nearby weights
(EMA or SWA along the trajectory, or of the k best checkpoints) is a cheaper variance reduction
than more seeds, and selection can weigh it against the online model on the same metrics.

EMA and SWA build on Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (which
keeps a :class:`torch.optim.swa_utils.AveragedModel`), changed where graphqa needs it:

- the online model is never touched. Lightning swaps the averaged weights in for validation,
  into every checkpoint and at the end of training; here the average stays a shadow copy, so
  ``val_*``, the checkpoints' weights and the RNG stream are exactly those of ``method: none``;
- the averaged weights are scored on val by themselves, through the same
  :func:`graphqa.module.val_metrics` and batches as the online model, logged as ``ema_*``;
- the best averaged state (lowest ``ema_selection_metric``) is kept, in the callback's
  checkpoint state too (so a resumed run ends identical), and saved at the end as
  ``checkpoints/averaged.ckpt``, a normal checkpoint for :func:`graphqa.module.load_module`.

``topk_avg`` is a plain uniform average of the k best saved checkpoints' state dicts at the end
of training (:func:`average_state_dicts`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR, get_ema_multi_avg_fn
from torch_geometric.data import Data

from graphqa.callbacks import predict_graphs
from graphqa.config import VarianceReductionConfig
from graphqa.module import MONITOR, load_module, val_metrics

AVERAGED_CKPT = "averaged.ckpt"
#: val metrics reported for the averaged weights, each as ``ema_<name>``.
AVERAGED_METRICS = (
    "val_loss",
    "val_spearman",
    "val_regret",
    "val_target_spearman",
    "val_hit_rate",
    MONITOR,
)
EMA_COLUMNS = tuple(f"ema_{name}" for name in AVERAGED_METRICS)
EMA_MONITOR = f"ema_{MONITOR}"


# --------------------------------------------------------------------------------------------
# Pure pieces


def score_averaged(module: Any, graphs: list[Data], batch_size: int) -> dict[str, float]:
    """``ema_*`` metrics of a module's weights on the val graphs.

    Same batches, same ``model_step`` and same :func:`val_metrics` as the online model's
    ``val_*``, so a reloaded ``averaged.ckpt`` re-scored here reproduces its logged numbers.
    """
    module.eval()
    pred, true, group = predict_graphs(module, graphs, batch_size)
    values = val_metrics(pred, true, group, module.hparams["selection"])
    return {f"ema_{name}": values[name] for name in AVERAGED_METRICS}


def average_state_dicts(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Uniform average of state dicts with the same keys (``topk_avg``).

    A tensor equal in every state (standardiser statistics, integer feature indices) is kept
    as it is; other floating tensors are summed in float64 and cast back, so the mean of two
    states is their exact mean rounded once. A non-floating tensor that differs is an error.
    """
    if not states:
        raise ValueError("no state dicts to average")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"state dict {i} has other keys than state dict 0")
    averaged: dict[str, Tensor] = {}
    for key in keys:
        tensors = [state[key] for state in states]
        first = tensors[0]
        if any(t.shape != first.shape for t in tensors):
            raise ValueError(f"{key}: tensor shapes differ between state dicts")
        if all(torch.equal(first, t) for t in tensors[1:]):
            averaged[key] = first.detach().clone()
        elif first.is_floating_point():
            total = torch.stack([t.detach().to(torch.float64) for t in tensors]).sum(0)
            averaged[key] = (total / len(tensors)).to(first.dtype)
        else:
            raise ValueError(f"{key}: non-floating tensor differs between state dicts")
    return averaged


def _is_better(score: float, best: dict[str, Any] | None) -> bool:
    """Lower wins; the first of equals stays; a NaN score never replaces a finite one."""
    if best is None:
        return True
    previous = best["metrics"][EMA_MONITOR]
    if math.isnan(score):
        return False
    return math.isnan(previous) or score < previous


def save_checkpoint(
    path: Path,
    state_dict: Mapping[str, Tensor],
    hparams: Mapping[str, Any],
    *,
    epoch: int,
    global_step: int,
    averaging: dict[str, Any],
) -> None:
    """A checkpoint :func:`graphqa.module.load_module` reads like any other (same
    ``hyper_parameters``), plus what was averaged; written atomically."""
    checkpoint = {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": L.__version__,
        "state_dict": dict(state_dict),
        "hyper_parameters": dict(hparams),
        "averaging": averaging,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class AveragedResult:
    """What ``summary.json["averaged"]`` records about a run's averaged weights."""

    method: str
    checkpoint: str | None  # relative to the run folder; None when nothing was averaged
    best_epoch: int | None
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        metrics = {k: None if math.isnan(v) else v for k, v in self.metrics.items()}
        return {
            "method": self.method,
            "checkpoint": self.checkpoint,
            "best_epoch": self.best_epoch,
            "metrics": metrics,
            **self.details,
        }


# --------------------------------------------------------------------------------------------
# EMA / SWA along the trajectory


class WeightAverager(WeightAveraging):
    """EMA or SWA of the weights after every optimizer step from ``start_epoch`` on.

    A shadow copy only (see the module docstring): the Lightning hooks that would put the
    averaged weights into the online model are overridden. Its state (average, best averaged
    state, SWALR) is this callback's ``state_dict``, so it rides in every checkpoint.
    """

    def __init__(
        self,
        cfg: VarianceReductionConfig,
        val_graphs: list[Data],
        batch_size: int,
        checkpoint_dir: str | Path,
    ) -> None:
        if cfg.method not in ("ema", "swa"):
            raise ValueError(f"WeightAverager averages ema or swa, not {cfg.method}")
        kwargs: dict[str, Any] = {}
        if cfg.method == "ema":
            kwargs["multi_avg_fn"] = get_ema_multi_avg_fn(cfg.ema_decay)
        # Buffers (standardiser statistics, feature indices) are fixed during training: copy
        # them, never average them (an EMA of integer buffers would truncate).
        super().__init__(use_buffers=False, **kwargs)
        self.cfg = cfg
        self.graphs, self.batch_size = val_graphs, batch_size
        self.checkpoint_dir = Path(checkpoint_dir)
        self.best: dict[str, Any] | None = None  # epoch, global_step, metrics, state_dict
        self.result: AveragedResult | None = None
        self._epoch = 0
        self._pending_average: dict[str, Tensor] | None = None
        self._swa_scheduler: SWALR | None = None
        self._swa_scheduler_state: dict[str, Any] | None = None

    # -- when to average -----------------------------------------------------------------

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Every optimizer step of an epoch >= ``start_epoch`` (never at epoch ends)."""
        return step_idx is not None and self._epoch >= self.cfg.start_epoch

    @property
    def started(self) -> bool:
        model = self._average_model
        return model is not None and int(model.n_averaged) > 0

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()):
            raise ValueError(
                "variance_reduction: the network has batch norm, whose statistics averaged "
                "weights would need recomputed (torch.optim.swa_utils.update_bn); not supported"
            )
        super().setup(trainer, pl_module, stage)
        if self._pending_average is not None and self._average_model is not None:
            self._average_model.load_state_dict(self._pending_average)
            self._pending_average = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming after SWALR took over: the checkpoint's scheduler state is SWALR's, so keep
        # Lightning from loading it into the configured scheduler; on_train_epoch_start
        # rebuilds SWALR and restores it (Lightning's StochasticWeightAveraging does the same).
        if self._swa_scheduler_state is not None:
            trainer.lr_scheduler_configs.clear()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = trainer.current_epoch
        swa_lr = self.cfg.swa_lr
        if swa_lr is None or self._swa_scheduler is not None:
            return
        if trainer.current_epoch < self.cfg.start_epoch:
            return
        # Constant swa_lr from here on (anneal_epochs=0), stepped per epoch like the schedule.
        self._swa_scheduler = SWALR(trainer.optimizers[0], swa_lr=swa_lr, anneal_epochs=0)
        if self._swa_scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._swa_scheduler_state)
        config = LRSchedulerConfig(self._swa_scheduler)
        if trainer.lr_scheduler_configs:
            trainer.lr_scheduler_configs[0] = config
        else:
            trainer.lr_scheduler_configs.append(config)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """No swap: ``val_*`` stay the online model's (the average is scored on its own)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.started:
            return
        assert self._average_model is not None
        shadow = self._average_model.module
        metrics = score_averaged(shadow, self.graphs, self.batch_size)
        # Each rank scores the whole (small) split, so values agree without a sync.
        pl_module.log_dict(metrics, sync_dist=False)
        if _is_better(metrics[EMA_MONITOR], self.best):
            self.best = {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "metrics": metrics,
                "state_dict": {k: v.detach().clone() for k, v in shadow.state_dict().items()},
            }

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the best averaged state; the online model keeps its own weights."""
        details: dict[str, Any] = {"start_epoch": self.cfg.start_epoch}
        if self.cfg.method == "ema":
            details["ema_decay"] = self.cfg.ema_decay
        if self.cfg.swa_lr is not None:
            details["swa_lr"] = self.cfg.swa_lr
        if self.best is None:
            details["note"] = (
                f"nothing averaged: training ended (epoch {trainer.current_epoch - 1}) before "
                f"variance_reduction.start_epoch {self.cfg.start_epoch}"
            )
            self.result = AveragedResult(self.cfg.method, None, None, {}, details)
            print(f"variance_reduction: {details['note']}", flush=True)
            return
        assert self._average_model is not None
        details["n_averaged"] = int(self._average_model.n_averaged)
        best = self.best
        self.result = AveragedResult(
            self.cfg.method,
            f"{self.checkpoint_dir.name}/{AVERAGED_CKPT}",
            int(best["epoch"]),
            dict(best["metrics"]),
            details,
        )
        if trainer.is_global_zero:
            save_checkpoint(
                self.checkpoint_dir / AVERAGED_CKPT,
                best["state_dict"],
                pl_module.hparams,
                epoch=int(best["epoch"]),
                global_step=int(best["global_step"]),
                averaging={"method": self.cfg.method, **details, "metrics": best["metrics"]},
            )

    # -- checkpoint state ----------------------------------------------------------------

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Leave the checkpoint's weights the online model's (state goes via state_dict)."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The online weights load as usual; the average comes from load_state_dict."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        model = self._average_model
        state["average"] = None if model is None else model.state_dict()
        state["best"] = self.best
        scheduler = self._swa_scheduler
        state["swa_scheduler"] = None if scheduler is None else scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best = state_dict.get("best")
        self._swa_scheduler_state = state_dict.get("swa_scheduler")
        average = state_dict.get("average")
        if average is not None:
            if self._average_model is None:
                self._pending_average = average
            else:
                self._average_model.load_state_dict(average)


# --------------------------------------------------------------------------------------------
# Top-k checkpoint average


class TopKAverager(Callback):
    """Uniform average of the ``k`` best checkpoints (by ``selection_metric``), built and
    scored once training ends; no state during training."""

    def __init__(
        self, k: int, val_graphs: list[Data], batch_size: int, checkpoint_dir: str | Path
    ) -> None:
        self.k = k
        self.graphs, self.batch_size = val_graphs, batch_size
        self.checkpoint_dir = Path(checkpoint_dir)
        self.result: AveragedResult | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        ckpt_cb = next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint))
        ranked = sorted(ckpt_cb.best_k_models.items(), key=lambda kv: (float(kv[1]), kv[0]))
        paths = [Path(p) for p, _ in ranked[: self.k]]
        checkpoints = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
        state = average_state_dicts([c["state_dict"] for c in checkpoints])
        module = load_module(paths[0])
        module.load_state_dict(state)
        metrics = score_averaged(module, self.graphs, self.batch_size)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        details = {
            "topk": self.k,
            "source_checkpoints": [p.name for p in paths],
            "source_epochs": [int(c["epoch"]) for c in checkpoints],
        }
        self.result = AveragedResult(
            "topk_avg", f"{self.checkpoint_dir.name}/{AVERAGED_CKPT}", None, metrics, details
        )
        save_checkpoint(
            self.checkpoint_dir / AVERAGED_CKPT,
            state,
            pl_module.hparams,
            epoch=max(details["source_epochs"]),
            global_step=trainer.global_step,
            averaging={"method": "topk_avg", **details, "metrics": metrics},
        )


def averaging_callback(
    cfg: VarianceReductionConfig,
    val_graphs: list[Data],
    batch_size: int,
    checkpoint_dir: str | Path,
) -> WeightAverager | TopKAverager | None:
    """The callback for ``variance_reduction.method`` (None for ``none``)."""
    if cfg.method == "none":
        return None
    if cfg.method == "topk_avg":
        return TopKAverager(cfg.topk, val_graphs, batch_size, checkpoint_dir)
    return WeightAverager(cfg, val_graphs, batch_size, checkpoint_dir)
