"""The LightningModule around :class:`~graphqa.model.TopoQANet` and its reload.

One ``model_step`` serves train and val; validation gathers every prediction (DDP-safe via
torchmetrics) so ranking metrics and the selection score are computed over the whole split.
Kept apart from run orchestration (:mod:`graphqa.train`) so inference, calibration and bundling
can reload a checkpoint without importing the trainer, loggers or callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import CatMetric, MeanMetric

from graphqa.maths import metrics as qa
from graphqa.model import TopoQANet, build_net

MONITOR = "selection_metric"


def compiled(net: torch.nn.Module) -> Any:
    """``torch.compile`` of a network, shapes dynamic (every batch has its own node and edge
    counts; static shapes would recompile for each)."""
    return torch.compile(net, dynamic=True)


def pairwise_ranking_loss(pred: Tensor, true: Tensor, group: Tensor, margin: float = 0.0) -> Tensor:
    """Hinge loss over ordered pairs of decoys of the same target in the batch."""
    same = group[:, None] == group[None, :]
    sign = torch.sign(true[:, None] - true[None, :])
    valid = same & (sign > 0)
    if not valid.any():
        return pred.new_zeros(())
    diff = pred[:, None] - pred[None, :]
    return F.relu(margin - diff[valid]).mean()


def val_metrics(
    pred: np.ndarray, true: np.ndarray, group: np.ndarray, selection: Mapping[str, Any]
) -> dict[str, float]:
    """``val_*`` metrics and the selection score of one set of val predictions.

    The single definition behind the online model's ``val_*`` and the averaged weights'
    ``ema_*`` (:mod:`graphqa.averaging`), so the two can be compared number for number.
    """
    val = qa.split_metrics(pred, true, group, selection["hit_dockq"], selection["hit_top_k"])
    return {
        "val_loss": val["loss"],
        "val_pearson": val["pearson"],
        "val_spearman": val["spearman"],
        "val_mae": val["mae"],
        "val_regret": val["regret"],
        "val_target_spearman": val["target_spearman"],
        "val_hit_rate": val["hit_rate"],
        MONITOR: qa.selection_score(
            val["loss"],
            val["spearman"],
            use_spearman=selection["use_val_spearman"],
            weight=selection["spearman_weight"],
            min_delta=selection["spearman_min_delta"],
        ),
    }


class GraphQAModule(L.LightningModule):
    """Wraps a plain ``nn.Module`` with the training step, validation metrics and optimiser.

    The settings arrive as plain dicts (``params.optimizer.model_dump()`` ...), not the typed
    config sections, on purpose: Lightning saves ``__init__``'s arguments into every
    checkpoint as its hyper-parameters, and checkpoints are loaded with ``weights_only=True``
    (nothing is unpickled), which admits builtins but not pydantic objects. The typed sections
    validated them before they got here.

    Args:
        net: the network (:class:`~graphqa.model.TopoQANet`).
        optimizer: ``params.optimizer`` as a dict.
        scheduler: ``params.scheduler`` as a dict.
        loss: ``params.loss`` as a dict.
        selection: ``params.selection`` as a dict (the checkpoint-ranking metric).
        compile: run the network through ``torch.compile`` (a speed switch, not saved).
    """

    def __init__(
        self,
        net: TopoQANet,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        loss: dict[str, Any],
        selection: dict[str, Any],
        compile: bool = False,
    ) -> None:
        super().__init__()
        # ``compile`` is a speed switch, not part of the model: it stays out of the
        # checkpoint's hyper-parameters so eager and compiled runs save the same keys.
        self.save_hyperparameters(ignore=["net", "compile"], logger=False)
        self.hparams["net_config"] = net.config.to_dict()
        self.net = net
        self.compile_net = compile
        self.train_loss = MeanMetric()
        self.val_pred, self.val_true, self.val_group = CatMetric(), CatMetric(), CatMetric()

    def __getstate__(self) -> dict[str, Any]:
        # Copies (weight averaging deep-copies the module) compile their own ``net`` lazily;
        # a copied compiled wrapper would keep calling the original's weights.
        state = dict(super().__getstate__())
        state.pop("_compiled", None)
        return state

    def network(self) -> Any:
        """The callable the steps use: ``self.net`` or, with ``compile``, its
        ``torch.compile`` wrapper. The wrapper is kept out of the registered submodules, so
        ``state_dict`` keys stay ``net.*`` (no ``_orig_mod.``) and checkpoints load into an
        eager module unchanged."""
        if not self.compile_net:
            return self.net
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not self.net:
            cached = (self.net, compiled(self.net))
            self.__dict__["_compiled"] = cached
        return cached[1]

    def forward(self, batch: Any) -> Tensor:
        return self.network()(
            batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs
        )

    def model_step(self, batch: Any) -> tuple[Tensor, Tensor]:
        pred = torch.sigmoid(self(batch))
        loss = F.mse_loss(pred, batch.y)
        weight = self.hparams["loss"]["ranking_weight"]
        if weight > 0 and self.training:
            loss = loss + weight * pairwise_ranking_loss(
                pred, batch.y, batch.target_id, self.hparams["loss"]["ranking_margin"]
            )
        return loss, pred

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, _ = self.model_step(batch)
        self.train_loss.update(loss.detach(), weight=batch.num_graphs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, pred = self.model_step(batch)
        self.val_pred.update(pred)
        self.val_true.update(batch.y)
        self.val_group.update(batch.target_id.to(pred.dtype))

    def epoch_metrics(self) -> dict[str, float]:
        """Whole-split validation metrics plus the selection score (reset afterwards)."""
        pred = self.val_pred.compute().double().cpu().numpy()
        true = self.val_true.compute().double().cpu().numpy()
        group = self.val_group.compute().cpu().numpy()
        for metric in (self.val_pred, self.val_true, self.val_group):
            metric.reset()
        return val_metrics(pred, true, group, self.hparams["selection"])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for metric in (self.val_pred, self.val_true, self.val_group):
                metric.reset()
            return
        values = self.epoch_metrics()
        if self.train_loss.update_called:
            values["train_loss"] = float(self.train_loss.compute())
            self.train_loss.reset()
        values["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        # Already gathered over all ranks by the CatMetrics: no second sync.
        self.log_dict(values, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # dropout masks after resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def configure_optimizers(self) -> Any:
        opt_cfg, sched_cfg = self.hparams["optimizer"], self.hparams["scheduler"]
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[opt_cfg["name"]]
        optimizer = cls(
            self.parameters(), lr=opt_cfg["learning_rate"], weight_decay=opt_cfg["weight_decay"]
        )
        if sched_cfg["type"] == "none":
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=sched_cfg["factor"],
            patience=sched_cfg["patience"],
            min_lr=sched_cfg["min_lr"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }


def load_module(path: str | Path) -> GraphQAModule:
    """Rebuild a trained module from a checkpoint without unpickling arbitrary objects."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    module = GraphQAModule(
        build_net(hp["net_config"]), hp["optimizer"], hp["scheduler"], hp["loss"], hp["selection"]
    )
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()
