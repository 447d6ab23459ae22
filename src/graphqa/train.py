"""Lightning training of :class:`~graphqa.model.TopoQANet` over packed splits.

One ``model_step`` serves train and val; validation gathers every prediction (DDP-safe via
torchmetrics) so ranking metrics and the selection score are computed over the whole split.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import Tensor
from torchmetrics import CatMetric, MeanMetric

from graphqa import metrics as qa
from graphqa.config import Params
from graphqa.contract import dump_json, write_json
from graphqa.data import GraphQADataModule
from graphqa.mask import resolve_mask
from graphqa.model import NetConfig, TopoQANet, build_net
from graphqa.schema import FEATURE_METADATA, FeatureSchema

MONITOR = "selection_metric"
CHECKPOINT_LINKS = ("best.ckpt", "second_best.ckpt", "third_best.ckpt")
EPOCH_METRICS = (
    "train_loss",
    "val_loss",
    "val_pearson",
    "val_spearman",
    "val_mae",
    "val_regret",
    "val_target_spearman",
    "val_hit_rate",
    "ema_val_loss",
    MONITOR,
    "lr",
)


def pairwise_ranking_loss(pred: Tensor, true: Tensor, group: Tensor, margin: float = 0.0) -> Tensor:
    """Hinge loss over ordered pairs of decoys of the same target in the batch."""
    same = group[:, None] == group[None, :]
    sign = torch.sign(true[:, None] - true[None, :])
    valid = same & (sign > 0)
    if not valid.any():
        return pred.new_zeros(())
    diff = pred[:, None] - pred[None, :]
    return F.relu(margin - diff[valid]).mean()


class GraphQAModule(L.LightningModule):
    """Wraps a plain ``nn.Module``; optimisation and selection settings are plain dicts."""

    def __init__(
        self,
        net: TopoQANet,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        loss: dict[str, Any],
        selection: dict[str, Any],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.hparams["net_config"] = net.config.to_dict()
        self.net = net
        self.train_loss = MeanMetric()
        self.val_pred, self.val_true, self.val_group = CatMetric(), CatMetric(), CatMetric()
        self.ema_val_loss: float | None = None

    def forward(self, batch: Any) -> Tensor:
        return self.net(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)

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
        sel = self.hparams["selection"]
        val_loss = float(((pred - true) ** 2).mean())
        val_spearman = qa.spearman(pred, true)
        ranking = qa.ranking_metrics(pred, true, group, sel["hit_dockq"], sel["hit_top_k"])
        self.ema_val_loss = qa.ema(self.ema_val_loss, val_loss, sel["ema_decay"])
        return {
            "val_loss": val_loss,
            "val_pearson": qa.pearson(pred, true),
            "val_spearman": val_spearman,
            "val_mae": float(abs(pred - true).mean()),
            "val_regret": ranking["regret"],
            "val_target_spearman": ranking["target_spearman"],
            "val_hit_rate": ranking["hit_rate"],
            "ema_val_loss": self.ema_val_loss,
            MONITOR: qa.selection_score(
                val_loss,
                val_spearman,
                use_spearman=sel["use_val_spearman"],
                weight=sel["spearman_weight"],
                min_delta=sel["spearman_min_delta"],
            ),
        }

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
        checkpoint["ema_val_loss"] = self.ema_val_loss
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # dropout masks after resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.ema_val_loss = checkpoint.get("ema_val_loss")
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
    module.ema_val_loss = ckpt.get("ema_val_loss")
    return module.eval()


# --------------------------------------------------------------------------------------------
# Callbacks


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(metrics[k]) for k in EPOCH_METRICS if k in metrics})
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", *EPOCH_METRICS])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _fmt(v) for k, v in row.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def _fmt(value: float) -> str | int:
    return value if isinstance(value, int) else f"{value:.8g}"


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


# --------------------------------------------------------------------------------------------
# A whole run


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def dvclive(self) -> Path:
        return self.root / "dvclive"


def selection_notice(params: Params) -> str:
    sel = params.selection
    if not sel.use_val_spearman:
        return f"selection: checkpoints ranked by val_loss ({MONITOR} = val_loss)"
    return (
        f"selection: {MONITOR} = val_loss - {sel.spearman_weight:g} * max(0, val_spearman"
        f" - {sel.spearman_min_delta:g}); lower is better"
    )


def net_config_for(params: Params, schema: FeatureSchema) -> NetConfig:
    mask = resolve_mask(schema, params.feature_mask)
    return NetConfig(
        node_dim=schema.node_dim,
        edge_dim=schema.edge_dim,
        hidden_dim=params.model.hidden_dim,
        num_layers=params.model.num_layers,
        heads=params.model.attention_head,
        dropout=params.model.dropout,
        pooling=params.model.pooling_type,
        edge_layer_norm=params.edge_schema.use_layer_norm,
        node_keep=mask.node_keep,
        edge_keep=mask.edge_keep,
    )


def configure_determinism(params: Params, seed: int) -> None:
    torch.set_num_threads(params.trainer.num_threads)
    L.seed_everything(seed, workers=True, verbose=False)


def _loggers(params: Params, paths: RunPaths, run_name: str, resume: bool) -> list[Any]:
    from dvclive.lightning import DVCLiveLogger

    loggers: list[Any] = [
        DVCLiveLogger(
            dir=str(paths.dvclive),
            save_dvc_exp=False,
            dvcyaml=None,
            report=None,
            run_name=run_name,
            resume=resume,
        )
    ]
    if params.mlflow.enabled:
        try:
            import mlflow  # noqa: F401
            from lightning.pytorch.loggers import MLFlowLogger

            loggers.append(
                MLFlowLogger(
                    experiment_name=params.mlflow.experiment,
                    run_name=params.mlflow.run_name or run_name,
                    tracking_uri=params.mlflow.tracking_uri,
                    tags=dict(params.mlflow.tags),
                )
            )
        except ImportError:
            warnings.warn(
                "mlflow.enabled is true but mlflow is not installed; "
                "training continues without MLflow logging",
                stacklevel=2,
            )
    return loggers


def build_trainer(
    params: Params,
    paths: RunPaths,
    run_name: str,
    extra_callbacks: list[Callback] | None = None,
    resume: bool = False,
) -> L.Trainer:
    tcfg = params.trainer
    checkpoint = PortableModelCheckpoint(
        dirpath=str(paths.checkpoints),
        filename="epoch{epoch:03d}",
        monitor=MONITOR,
        mode="min",
        save_top_k=3,
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks: list[Callback] = [checkpoint, EpochMetricsCSV(paths.metrics_csv)]
    if params.early_stopping.enabled:
        callbacks.append(
            EarlyStopping(
                monitor=MONITOR,
                mode="min",
                patience=params.early_stopping.patience,
                min_delta=params.early_stopping.min_delta,
                check_finite=False,
            )
        )
    if params.logging.progress == "compact":
        callbacks.append(CompactProgress())
    callbacks.extend(extra_callbacks or [])
    return L.Trainer(
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        strategy=tcfg.strategy,
        precision=tcfg.precision,
        max_epochs=tcfg.max_epochs,
        accumulate_grad_batches=tcfg.accumulate_grad_batches,
        gradient_clip_val=tcfg.gradient_clip_val,
        deterministic=tcfg.deterministic,
        default_root_dir=str(paths.root),
        callbacks=callbacks,
        logger=_loggers(params, paths, run_name, resume),
        log_every_n_steps=params.logging.log_every_n_steps,
        enable_progress_bar=params.logging.progress == "bar",
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _link_best(trainer: L.Trainer, paths: RunPaths) -> list[str]:
    """best/second_best/third_best.ckpt as relative symlinks, ranked by the monitor."""
    ckpt_cb = next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint))
    ranked = sorted(ckpt_cb.best_k_models.items(), key=lambda kv: (float(kv[1]), kv[0]))
    names = []
    for link, (target, _) in zip(CHECKPOINT_LINKS, ranked, strict=False):
        dest = paths.checkpoints / link
        dest.unlink(missing_ok=True)
        dest.symlink_to(Path(target).name)
        names.append(Path(target).name)
    return names


def _best_row(rows: list[dict[str, float]]) -> dict[str, float]:
    finite = [r for r in rows if not math.isnan(r.get(MONITOR, float("nan")))]
    return min(finite or rows, key=lambda r: (r.get(MONITOR, math.inf), r["epoch"]))


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def train_run(
    *,
    params: Params,
    schema_dir: str | Path,
    run_dir: str | Path,
    seed: int | None = None,
    init_from: str | Path | None = None,
    resume_from: str | Path | None = None,
    run_name: str = "train",
    extra_callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train one model and write the run folder; returns ``summary.json``'s content.

    ``init_from`` starts from a checkpoint's weights (fine-tuning: fresh optimizer and
    schedule); ``resume_from`` continues an interrupted run exactly (optimizer, epoch, RNG).
    """
    seed = params.dataloader.seed if seed is None else seed
    configure_determinism(params, seed)
    schema_dir, paths = Path(schema_dir), RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    schema = FeatureSchema.load(schema_dir / FEATURE_METADATA)
    data = GraphQADataModule(
        schema_dir / "packed",
        batch_size=params.dataloader.batch_size,
        num_workers=params.dataloader.num_workers,
        seed=seed,
    )
    net = build_net(net_config_for(params, schema))
    if init_from is not None:
        source = load_module(init_from).net
        if source.config != net.config:
            raise ValueError(
                f"{init_from}: checkpoint network {source.config} does not match "
                f"the configured one {net.config}"
            )
        net.load_state_dict(source.state_dict())
    else:
        train = data.split("train")
        net.fit_standardizers(train.x, train.edge_attr)
    module = GraphQAModule(
        net,
        params.optimizer.model_dump(),
        params.scheduler.model_dump(),
        params.loss.model_dump(),
        params.selection.model_dump(),
    )
    print(selection_notice(params), flush=True)
    if resume_from is None:
        paths.summary.write_text(
            dump_json(
                {
                    "status": "running",
                    "seed": seed,
                    "schema_dir": schema_dir.as_posix(),
                    "init_from": Path(init_from).as_posix() if init_from else None,
                    "run_name": run_name,
                    "params": params.to_dict(),
                }
            )
        )
    trainer = build_trainer(
        params, paths, run_name, extra_callbacks, resume=resume_from is not None
    )
    trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    return finalize_run(trainer, params, schema, paths, seed)


def resume_run(run_dir: str | Path) -> dict[str, Any]:
    """Continue an interrupted run from ``checkpoints/last.ckpt`` with the params it started
    with; the run folder ends up as if it had never stopped."""
    from graphqa.config import parse_params

    paths = RunPaths(Path(run_dir))
    if not paths.summary.exists():
        raise FileNotFoundError(f"{paths.summary}: not a graphqa run folder")
    started = json.loads(paths.summary.read_text())
    last = paths.checkpoints / "last.ckpt"
    if not last.exists():
        raise FileNotFoundError(f"{last}: nothing to resume from (no epoch finished yet)")
    params = parse_params(started["params"], source=str(paths.summary))
    return train_run(
        params=params,
        schema_dir=started["schema_dir"],
        run_dir=paths.root,
        seed=started["seed"],
        resume_from=last,
        run_name=started.get("run_name", "train"),
    )


def finalize_run(
    trainer: L.Trainer, params: Params, schema: FeatureSchema, paths: RunPaths, seed: int
) -> dict[str, Any]:
    """Links, metrics.json, summary.json and feature_metadata.json for a finished run."""
    if trainer.global_rank != 0:
        return {}
    ranked = _link_best(trainer, paths)
    rows = next(cb for cb in trainer.callbacks if isinstance(cb, EpochMetricsCSV)).rows
    best = _best_row(rows)
    headline = {k: _clean(best.get(k, float("nan"))) for k in EPOCH_METRICS if k != "lr"}
    headline.update({"best_epoch": int(best["epoch"]), "epochs_trained": len(rows)})
    write_json(paths.metrics_json, headline)
    write_json(paths.root / FEATURE_METADATA, schema.to_json())
    started = json.loads(paths.summary.read_text()) if paths.summary.exists() else {}
    summary = {
        "status": "finished",
        "best_selection_metric": headline[MONITOR],
        "best_epoch": int(best["epoch"]),
        "checkpoint": f"checkpoints/{CHECKPOINT_LINKS[0]}",
        "ranked_checkpoints": [f"checkpoints/{n}" for n in ranked],
        "seed": seed,
        "schema_dir": started.get("schema_dir"),
        "init_from": started.get("init_from"),
        "run_name": started.get("run_name"),
        "metrics": headline,
        "schema": {
            "node_dim": schema.node_dim,
            "edge_dim": schema.edge_dim,
            "topology_dim": schema.topology_dim,
            "edge_module": schema.edge_module,
            "source": schema.source,
        },
        "params": params.to_dict(),
    }
    paths.summary.write_text(dump_json(summary))
    return summary
