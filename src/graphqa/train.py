"""One training run: the trainer, its loggers, and the run folder it leaves behind.

The network wrapper lives in :mod:`graphqa.module`, the callbacks in :mod:`graphqa.callbacks`;
this module wires them into a run (fresh, fine-tuned from a checkpoint, or resumed) and writes
``metrics.json``/``summary.json``/``feature_metadata.json`` once it finishes. Weight averaging
(``variance_reduction``, :mod:`graphqa.averaging`) adds a shadow averaged model, scored as
``ema_*`` and saved as ``checkpoints/averaged.ckpt``, without changing the online run.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from graphqa.averaging import (
    AVERAGED_CKPT,
    EMA_COLUMNS,
    AveragedResult,
    TopKAverager,
    WeightAverager,
    averaging_callback,
)
from graphqa.callbacks import (
    EPOCH_METRICS,
    TUNING_COLUMNS,
    CompactProgress,
    EpochMetricsCSV,
    PortableModelCheckpoint,
    TuningMetrics,
)
from graphqa.config import Params, parse_params
from graphqa.data import TUNING_SPLIT, GraphQADataModule, PackedSplit
from graphqa.files import dump_json, sha256_file, write_json
from graphqa.layout import RunPaths, SchemaPaths, packed_path
from graphqa.mask import resolve_mask
from graphqa.maths.metrics import rounded
from graphqa.model import NetConfig, build_net
from graphqa.module import MONITOR, GraphQAModule, load_module
from graphqa.numerics import check_pinned, numerics_report
from graphqa.schema import FeatureSchema

CHECKPOINT_LINKS = ("best.ckpt", "second_best.ckpt", "third_best.ckpt")


# --------------------------------------------------------------------------------------------
# A whole run


def selection_notice(params: Params) -> str:
    """The line a run prints first, so its log says how checkpoints are ranked.

    Args:
        params: the run's params (``selection`` section).

    Returns:
        The ``selection_metric`` formula in words.
    """
    sel = params.selection
    if not sel.use_val_spearman:
        return f"selection: checkpoints ranked by val_loss ({MONITOR} = val_loss)"
    return (
        f"selection: {MONITOR} = val_loss - {sel.spearman_weight:g} * max(0, val_spearman"
        f" - {sel.spearman_min_delta:g}); lower is better"
    )


def net_config_for(params: Params, schema: FeatureSchema) -> NetConfig:
    """The network a run builds: the schema's dims, the ``model`` params and the feature mask.

    Args:
        params: the run's params.
        schema: the resolved feature schema.

    Returns:
        The network config (also stored in the run's checkpoints).

    Raises:
        DataContractError: ``feature_mask.path`` is missing, invalid or keeps no column.
    """
    mask = resolve_mask(schema, params.feature_mask)
    return NetConfig(
        node_dim=schema.node_dim,
        edge_dim=schema.edge_dim,
        hidden_dim=params.model.hidden_dim,
        num_layers=params.model.num_layers,
        heads=params.model.attention_head,
        dropout=params.model.dropout,
        pooling=params.model.pooling_type,
        pooled_skip=params.model.pooled_skip,
        attention_kernel=params.model.attention_kernel,
        edge_layer_norm=params.edge_schema.use_layer_norm,
        node_keep=mask.node_keep,
        edge_keep=mask.edge_keep,
    )


def configure_determinism(params: Params, seed: int) -> None:
    """Pinned numeric path, fixed thread count (sums are split by thread), seeded RNGs."""
    check_pinned()
    torch.set_num_threads(params.trainer.num_threads)
    # Deterministic mode would also fill every new tensor with NaN, a debugging aid against
    # reads of uninitialised memory that cost ~5 % of a seeds-scale step; nothing here reads
    # memory before writing it, so results are the same bytes either way.
    torch.utils.deterministic.fill_uninitialized_memory = False
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
    mlflow_logger = _mlflow_logger(params, paths, run_name)
    if mlflow_logger is not None:
        loggers.append(mlflow_logger)
    return loggers


def _mlflow_logger(params: Params, paths: RunPaths, run_name: str) -> Any | None:
    """Lightning's MLFlowLogger writing under ``mlflow.tracking_uri`` only (never into the
    DVC-tracked run folder); None when disabled or when mlflow is not installed (warned)."""
    if not params.mlflow.enabled:
        return None
    try:
        import mlflow  # noqa: F401
        from lightning.pytorch.loggers import MLFlowLogger
    except ImportError:
        warnings.warn(
            "mlflow.enabled is true but mlflow is not installed; "
            "training continues without MLflow logging",
            stacklevel=3,
        )
        return None
    if urlparse(params.mlflow.tracking_uri).scheme in ("", "file"):
        # MLflow >= 3.x refuses a local folder store (the seeds' `./mlruns`) unless opted in;
        # the config asks for one, so opt in (an explicit MLFLOW_ALLOW_FILE_STORE wins).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(
        experiment_name=params.mlflow.experiment,
        run_name=params.mlflow.run_name or run_name,
        tracking_uri=params.mlflow.tracking_uri,
        tags={"graphqa.run_dir": paths.root.as_posix(), **params.mlflow.tags},
    )


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: dotted keys (``optimizer.learning_rate``), values as
    YAML would show them (lists and empty mappings as JSON)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{dotted}."))
        else:
            flat[dotted] = value if isinstance(value, str) else json.dumps(value)
    return flat


def _mlflow_of(trainer: L.Trainer) -> Any | None:
    from lightning.pytorch.loggers import MLFlowLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def _log_mlflow_artifacts(
    trainer: L.Trainer, params: Params, paths: RunPaths, schema_dir: Path
) -> None:
    """Coverage report, feature metadata and the top checkpoints, copied into the MLflow run's
    artifact store (``checkpoints/best.ckpt`` ...); the run folder itself is left untouched."""
    logger = _mlflow_of(trainer)
    if logger is None or not params.mlflow.log_artifacts or trainer.global_rank != 0:
        return
    for path in (SchemaPaths(schema_dir).coverage, paths.feature_metadata):
        if path.is_file():
            logger.experiment.log_artifact(logger.run_id, str(path))
    for link in (*CHECKPOINT_LINKS, AVERAGED_CKPT):
        path = paths.checkpoints / link
        if path.exists():  # a symlink: the copy holds the checkpoint's bytes
            logger.experiment.log_artifact(logger.run_id, str(path), "checkpoints")


def tuning_callback(packed_dir: Path, params: Params) -> TuningMetrics | None:
    """Scorer of the tuning split, or None when the schema stage packed none (no
    ``paths.tuning_labels`` or a header-only CSV)."""
    path = packed_path(packed_dir, TUNING_SPLIT)
    if not path.exists():
        return None
    split = PackedSplit.load(path)
    if len(split) == 0:
        return None
    return TuningMetrics(
        split.data_list(), params.dataloader.batch_size, params.selection.hit_top_k
    )


def build_trainer(
    params: Params,
    paths: RunPaths,
    run_name: str,
    extra_callbacks: list[Callback] | None = None,
    resume: bool = False,
    tuning: TuningMetrics | None = None,
    averaging: Callback | None = None,
) -> L.Trainer:
    """The Lightning trainer of one run, with graphqa's checkpointing, logs and callbacks.

    Args:
        params: the run's params.
        paths: the run folder.
        run_name: the name the loggers record.
        extra_callbacks: appended after graphqa's own callbacks.
        resume: whether the run continues an interrupted one (DVCLive appends).
        tuning: the tuning-split scorer (adds the ``tuning_*`` columns), if any.
        averaging: the weight-averaging callback, if any.

    Returns:
        The trainer: top-k and last checkpoints by ``selection_metric`` in
        ``checkpoints/``, per-epoch ``metrics.csv``, early stopping and progress as
        configured, DVCLive (and MLflow) logging.
    """
    tcfg = params.trainer
    vr = params.variance_reduction
    checkpoint = PortableModelCheckpoint(
        dirpath=str(paths.checkpoints),
        filename="epoch{epoch:03d}",
        monitor=MONITOR,
        mode="min",
        # topk_avg averages the k best checkpoints, so at least k must be kept
        save_top_k=max(len(CHECKPOINT_LINKS), vr.topk if vr.method == "topk_avg" else 0),
        save_last=True,
        auto_insert_metric_name=False,
    )
    columns = EPOCH_METRICS
    if isinstance(averaging, WeightAverager):  # ema_* every epoch (topk_avg: once, at the end)
        columns = (*columns, *EMA_COLUMNS)
    if tuning is not None:
        columns = (*columns, *TUNING_COLUMNS)
    callbacks: list[Callback] = [checkpoint, EpochMetricsCSV(paths.metrics_csv, columns)]
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
    if tuning is not None:
        callbacks.append(tuning)
    if averaging is not None:
        callbacks.append(averaging)
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


def train_stage(
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
    """Stage worker for ``train`` (also behind fine-tuning and FLT retrains): train one model
    and leave a run folder that selection, calibration and the bundle can read.

    ``init_from`` starts from a checkpoint's weights (fine-tuning: fresh optimizer and
    schedule); ``resume_from`` continues an interrupted run exactly (optimizer, epoch, RNG).

    Reads ``<schema_dir>/feature_metadata.json``, ``<schema_dir>/packed/{train,val}.pt``,
    ``<schema_dir>/packed/tuning.pt`` when present, the sha256 of every
    ``<schema_dir>/packed/*.pt`` (provenance), ``feature_mask.path`` when set, and
    ``init_from``/``resume_from``. Writes into ``run_dir``: ``summary.json`` (``running`` at
    the start, ``finished`` at the end), ``checkpoints/`` (``epoch<NNN>.ckpt``,
    ``last.ckpt``, links ``best.ckpt``/``second_best.ckpt``/``third_best.ckpt``, and
    ``averaged.ckpt`` with weight averaging), ``metrics.csv`` (one row per epoch),
    ``metrics.json``, ``feature_metadata.json`` and ``dvclive/``. With ``mlflow.enabled`` it
    also logs to ``mlflow.tracking_uri``.

    Args:
        params: the run's params.
        schema_dir: stage ``schema``'s folder.
        run_dir: the run folder to write.
        seed: the run's seed (``None``: ``dataloader.seed``).
        init_from: a checkpoint whose weights the network starts from.
        resume_from: the ``last.ckpt`` of an interrupted run to continue.
        run_name: the name the loggers record.
        extra_callbacks: more Lightning callbacks (tests).

    Returns:
        The content of ``summary.json`` (empty on non-zero ranks of a multi-process run).

    Raises:
        ValueError: ``init_from``'s network does not match the configured one.
    """
    seed = params.dataloader.seed if seed is None else seed
    configure_determinism(params, seed)
    schema_dir, paths = Path(schema_dir), RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    schema = FeatureSchema.load(SchemaPaths(schema_dir).feature_metadata)
    data = GraphQADataModule(
        SchemaPaths(schema_dir).packed_dir,
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
        compile=params.trainer.compile,
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
                    "params": recorded_params(params),
                }
            )
        )
    tuning = tuning_callback(SchemaPaths(schema_dir).packed_dir, params)
    averaging = averaging_callback(
        params.variance_reduction,
        data.graphs("val"),
        params.dataloader.batch_size,
        paths.checkpoints,
    )
    trainer = build_trainer(
        params,
        paths,
        run_name,
        extra_callbacks,
        resume=resume_from is not None,
        tuning=tuning,
        averaging=averaging,
    )
    mlflow_logger = _mlflow_of(trainer)
    if mlflow_logger is not None:
        mlflow_logger.log_hyperparams(
            {**flatten_params(params.to_dict()), "run.seed": str(seed), "run.name": run_name}
        )
    trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    summary = finalize_run(trainer, params, schema, paths, seed)
    _log_mlflow_artifacts(trainer, params, paths, schema_dir)
    return summary


def resume_run(run_dir: str | Path) -> dict[str, Any]:
    """Continue an interrupted run from ``checkpoints/last.ckpt`` with the params it started
    with; the run folder ends up as if it had never stopped."""
    paths = RunPaths(Path(run_dir))
    if not paths.summary.exists():
        raise FileNotFoundError(f"{paths.summary}: not a graphqa run folder")
    started = json.loads(paths.summary.read_text())
    last = paths.checkpoints / "last.ckpt"
    if not last.exists():
        raise FileNotFoundError(f"{last}: nothing to resume from (no epoch finished yet)")
    params = parse_params(started["params"], source=str(paths.summary))
    return train_stage(
        params=params,
        schema_dir=started["schema_dir"],
        run_dir=paths.root,
        seed=started["seed"],
        resume_from=last,
        run_name=started.get("run_name", "train"),
    )


def _averaged_result(trainer: L.Trainer) -> AveragedResult | None:
    """The averaging callback's result (None with ``variance_reduction.method: none``)."""
    averager = next(
        (cb for cb in trainer.callbacks if isinstance(cb, (WeightAverager, TopKAverager))), None
    )
    return None if averager is None else averager.result


def finalize_run(
    trainer: L.Trainer, params: Params, schema: FeatureSchema, paths: RunPaths, seed: int
) -> dict[str, Any]:
    """Links, metrics.json, summary.json and feature_metadata.json for a finished run."""
    if trainer.global_rank != 0:
        return {}
    ranked = _link_best(trainer, paths)
    csv_log = next(cb for cb in trainer.callbacks if isinstance(cb, EpochMetricsCSV))
    rows = csv_log.rows
    best = _best_row(rows)
    online = [k for k in csv_log.columns if k != "lr" and k not in EMA_COLUMNS]
    headline = {k: rounded(best.get(k, float("nan"))) for k in online}
    headline.update({"best_epoch": int(best["epoch"]), "epochs_trained": len(rows)})
    averaged = _averaged_result(trainer)
    if averaged is not None and averaged.checkpoint is not None:
        # ema_* are the saved averaged weights' metrics (its own best epoch), not the online
        # best epoch's row: selection ranks checkpoints that exist.
        headline.update({k: rounded(v) for k, v in averaged.metrics.items()})
        if averaged.best_epoch is not None:
            headline["ema_best_epoch"] = averaged.best_epoch
    write_json(paths.metrics_json, headline)
    write_json(paths.feature_metadata, schema.to_json())
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
        "params": recorded_params(params),
        "provenance": run_provenance(started.get("schema_dir")),
        # null unless checkpoints/averaged.ckpt exists (method none, or nothing averaged)
        "averaged": None if averaged is None or averaged.checkpoint is None else averaged.to_json(),
    }
    if averaged is not None and averaged.checkpoint is None:
        summary["averaged_note"] = averaged.details.get("note")
    tuning = next((cb for cb in trainer.callbacks if isinstance(cb, TuningMetrics)), None)
    if tuning is not None:  # selection needs it to decide whether tuning_* metrics may rank
        summary["tuning_groups"] = tuning.groups
    paths.summary.write_text(dump_json(summary))
    return summary


#: The params a run's outputs depend on, and so all its summary records: the sections the
#: training stages declare in dvc.yaml (dataloader.seed comes from the stage's command).
#: Recording every param would tie summary.json to params DVC does not track, so changing,
#: say, calibration.coverage would leave the committed summaries stale for a fresh clone.
RECORDED_SECTIONS = (
    "model",
    "edge_schema",
    "feature_mask",
    "dataloader",
    "trainer",
    "optimizer",
    "scheduler",
    "early_stopping",
    "variance_reduction",
    "loss",
)
#: ``model`` keys the training stages do not declare (see dvc.yaml): which scorer ships is
#: decided after training, so changing it must not retrain anything.
UNRECORDED_MODEL_KEYS = ("family",)
RECORDED_SELECTION_KEYS = (
    "use_val_spearman",
    "spearman_min_delta",
    "spearman_weight",
    "hit_dockq",
    "hit_top_k",
)


def recorded_params(params: Params) -> dict[str, Any]:
    """The training-relevant params of a run (see :data:`RECORDED_SECTIONS`); other sections
    take their defaults when a fine-tune or resume rebuilds params from it."""
    full = params.to_dict()
    recorded = {section: full[section] for section in RECORDED_SECTIONS}
    for key in UNRECORDED_MODEL_KEYS:  # chosen after training: no training stage declares it
        recorded["model"].pop(key, None)
    recorded["selection"] = {k: full["selection"][k] for k in RECORDED_SELECTION_KEYS}
    return recorded


def run_provenance(schema_dir: str | None) -> dict[str, Any]:
    """What a run was made from, recorded by the process that used it: the sha256 of the
    packed splits it read and the numeric path it ran on (see :mod:`graphqa.numerics`)."""
    packed = SchemaPaths(Path(schema_dir or ".")).packed_dir
    return {
        "data_sha256": {f"packed/{p.name}": sha256_file(p) for p in sorted(packed.glob("*.pt"))},
        "numerics": numerics_report(),
    }
