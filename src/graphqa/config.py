"""Typed, validated view of ``params.yaml``.

Every section is a frozen pydantic model that forbids unknown keys, so a misspelt key fails at
load with its dotted path and the nearest valid name instead of being silently ignored.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A params file (or override) that does not match the schema below."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Inputs of the pipeline. Pointing ``graph_dir`` (and the labels) at a graph builder's
    output is enough: the metadata and the builder summary follow the graph folder unless set.
    """

    graph_dir: str = "data/dataset/graphs"
    train_labels: str = "data/dataset/labels/train.csv"
    val_labels: str = "data/dataset/labels/val.csv"
    val_calib_labels: str = "data/dataset/labels/val_calib.csv"
    test_labels: str = "data/dataset/labels/test.csv"
    #: graph_metadata.json, or a folder to look in, for a non-standard layout. null (default)
    #: follows graph_dir: <graph_dir>/graph_metadata.json, inside the declared graph folder (no
    #: file there: the schema is read off the .pt files).
    metadata_path: str | None = None
    #: graph_builder_summary.json, or a folder to search for it, for a non-standard layout.
    #: null (default) follows graph_dir: the graph folder, then beside it
    #: (<graph_dir>/../graph_builder_summary.json, where the builder writes it and which the
    #: schema stage declares). Its builder facts go into feature_metadata.json.
    summary_path: str | None = None
    #: Optional tuning split scored every epoch (tuning_* metrics) and selectable on. A
    #: header-only CSV means "no tuning split" (DVC cannot declare an optional file).
    tuning_labels: str | None = None

    def label_files(self) -> dict[str, str]:
        """Split name -> label CSV, in pipeline order (``tuning`` last, when configured)."""
        files = {
            "train": self.train_labels,
            "val": self.val_labels,
            "val_calib": self.val_calib_labels,
            "test": self.test_labels,
        }
        if self.tuning_labels is not None:
            files["tuning"] = self.tuning_labels
        return files


class SplitFractions(_Section):
    """How the embedded dataset divides its targets among the splits (fractions sum to 1)."""

    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    val_calib: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    #: 0: no tuning targets (labels/tuning.csv is written header-only).
    tuning: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.val_calib + self.test + self.tuning
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


class DatasetConfig(_Section):
    """The embedded synthetic dataset (same on-disk contract as a real graph builder)."""

    seed: int = 7
    n_targets: int = Field(48, ge=4)
    models_per_target: int = Field(32, ge=2)
    min_nodes: int = Field(20, ge=4)
    max_nodes: int = Field(100, ge=4)
    knn: int = Field(8, ge=1)
    label_noise: float = Field(0.03, ge=0, le=0.5)
    #: Targets differ in difficulty: each target's label noise is label_noise times a
    #: log-normal factor (mean 1) with this sd of its log; 0 = every target alike.
    target_difficulty: float = Field(0.0, ge=0, le=2)
    split: SplitFractions = SplitFractions()
    #: bimodal: most DockQ < 0.1, a good mode > 0.8, few in between (real decoy sets);
    #: unimodal: the original generator, byte for byte. The code default keeps the original
    #: (test fixtures); params.yaml turns the realistic regime on.
    label_shape: Literal["bimodal", "unimodal"] = "unimodal"
    #: Heavy-tailed count node columns (rare close contacts) whose graph sums carry a planted
    #: signal while their per-node means carry little; 0 = none (the original generator).
    count_columns: int = Field(0, ge=0, le=16)
    #: At most this many train graphs, whole train targets kept in name order (null: no cap);
    #: val/val_calib/test stay exactly as without the cap.
    train_models_cap: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _node_range(self) -> DatasetConfig:
        if self.max_nodes < self.min_nodes:
            raise ValueError("max_nodes must be >= min_nodes")
        if self.knn >= self.min_nodes:
            raise ValueError("knn must be < min_nodes")
        if self.train_models_cap is not None and self.train_models_cap < self.models_per_target:
            raise ValueError(
                "train_models_cap must be >= models_per_target (whole targets are kept)"
            )
        return self


class SchemaConfig(_Section):
    """The ``schema:`` section: how strictly stage ``schema`` checks the graphs it packs."""

    verify_manifest: bool = True
    allow_missing_graphs: bool = False  # True: drop label rows without a graph, report them
    manifest_ignore_metadata: bool = False  # True: skip the manifest's `metadata` digests
    #: With allow_missing_graphs: the least % of label rows that must have a graph (0: any).
    min_coverage_percent: float = Field(0.0, ge=0, le=100)


class EdgeSchemaConfig(_Section):
    """Edge-feature handling of the network (``use_layer_norm``: LayerNorm after the edge
    encoder's linear layer).
    """

    use_layer_norm: bool = True


class FeatureMaskConfig(_Section):
    """Which feature columns a model sees: a mask file (e.g. FLT's) and the kinds it governs
    (:mod:`graphqa.mask`); ``strict`` refuses column names the schema does not have.
    """

    path: str | None = None
    apply_to: list[Literal["node", "edge", "topology"]] = ["node", "edge", "topology"]
    strict: bool = True


class ModelConfig(_Section):
    """The network's architecture, and which scorer family the pipeline ships."""

    hidden_dim: int = Field(64, ge=4)
    num_layers: int = Field(2, ge=1)
    attention_head: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    #: One readout or a '+' join whose parts are concatenated (sum is PyG's add).
    pooling_type: Literal["mean", "max", "add", "sum", "attention", "mean+max", "mean+max+sum"] = (
        "mean"
    )
    #: Head also sees per-graph input statistics (counts, column means, log sums).
    pooled_skip: bool = False
    #: fused: graphqa's C++ attention kernel (built at install; the same network, other float
    #: rounding, several times fewer passes over edge tensors); pyg: PyG's GATv2Conv.
    attention_kernel: Literal["fused", "pyg"] = "fused"
    #: Shipped scorer (stage ``scorer``): auto ships the best out-of-fold ranking loss; gnn is
    #: the seeds' way.
    #: Not a training param: changing it reruns scorer and what follows, no training.
    family: Literal["auto", "gnn", "trees", "blend"] = "auto"


class DataloaderConfig(_Section):
    """Mini-batching of training; ``seed`` seeds the run (RNGs and the epoch shuffle)."""

    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(0, ge=0)
    seed: int = 222


class TrainerConfig(_Section):
    """Lightning ``Trainer`` settings, plus the torch thread count and ``torch.compile``."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: int | str = 32
    max_epochs: int = Field(30, ge=1)
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, ge=0)
    deterministic: bool = True
    num_threads: int = Field(2, ge=1)
    #: torch.compile the network for training (benchmarks/compile_speedup.py measures it).
    compile: bool = False


class OptimizerConfig(_Section):
    """The optimizer (Adam or AdamW) of every training run."""

    name: Literal["adam", "adamw"] = "adamw"
    learning_rate: float = Field(0.003, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class SchedulerConfig(_Section):
    """Learning-rate schedule: reduce on a ``val_loss`` plateau, or none."""

    type: Literal["reduce_on_plateau", "none"] = "reduce_on_plateau"
    factor: float = Field(0.4, gt=0, lt=1)
    patience: int = Field(5, ge=0)
    min_lr: float = Field(1e-5, ge=0)


class EarlyStoppingConfig(_Section):
    """Stop a run once ``selection_metric`` has not improved for ``patience`` epochs."""

    enabled: bool = True
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class LossConfig(_Section):
    """Training loss: MSE plus, with ``ranking_weight`` > 0, a pairwise hinge ranking loss
    over decoys of the same target.
    """

    ranking_weight: float = Field(0.0, ge=0)
    ranking_margin: float = Field(0.0, ge=0)


RankMetric = Literal[
    "selection_metric",
    "val_loss",
    "ema_val_loss",
    "ema_selection_metric",
    "ema_val_spearman",
    "ema_val_regret",
    "ema_val_target_spearman",
    "ema_val_hit_rate",
    "val_mae",
    "val_regret",
    "val_spearman",
    "val_pearson",
    "val_target_spearman",
    "val_hit_rate",
    "tuning_rank_spearman",
    "tuning_rank_regret",
    "tuning_hit_rate_023",
    "tuning_dockq_mae",
]


class ShortlistConfig(_Section):
    """Option B: shortlist the top ``k`` runs by a loss, then pick by a ranking metric."""

    enabled: bool = False
    k: int = Field(3, ge=1)
    #: ema_val_loss: val loss of the run's averaged weights (needs variance_reduction.method).
    by: Literal["val_loss", "ema_val_loss"] = "ema_val_loss"
    then: RankMetric = "val_regret"


class SelectionConfig(_Section):
    """How checkpoints and runs are ranked: the ``selection_metric`` formula, the hit-rate
    settings and the metric (or shortlist) selection stages rank by.
    """

    use_val_spearman: bool = True
    spearman_min_delta: float = 0.0
    spearman_weight: float = Field(1.0, ge=0)
    hit_dockq: float = Field(0.23, ge=0, le=1)
    hit_top_k: int = Field(10, ge=1)
    primary_metric: RankMetric = "selection_metric"
    shortlist: ShortlistConfig = ShortlistConfig()
    #: A tuning_* metric ranks runs only if the tuning split has at least this many targets
    #: with >= 2 models; otherwise selection falls back to val_loss and says so.
    min_tuning_groups: int = Field(3, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        # An old key that now means something else is refused by name, not silently ignored.
        if isinstance(data, dict) and "ema_decay" in data:
            raise ValueError(
                "selection.ema_decay was removed: ema_* metrics now score weight-averaged "
                "models; set variance_reduction.ema_decay instead"
            )
        return data


AVERAGING_METHODS = ("none", "ema", "swa", "topk_avg")


class VarianceReductionConfig(_Section):
    """Weight averaging of each training run; the averaged weights are scored as ``ema_*``.

    ``ema``: exponential moving average of the weights, updated every optimizer step;
    ``swa``: uniform average of the weights after every optimizer step (stochastic weight
    averaging); both from ``start_epoch`` on, scored on val every epoch, the best averaged
    state kept. ``topk_avg``: uniform average of the ``topk`` best checkpoints (by
    ``selection_metric``) once training ends. The online model trains exactly as with
    ``none`` (unless ``swa_lr`` replaces its schedule).
    """

    method: Literal["none", "ema", "swa", "topk_avg"] = "ema"
    #: Per optimizer step. The default run takes ~30 steps/epoch for 30 epochs (~900 steps);
    #: 0.99 averages over the last ~1/(1-0.99) = 100 steps (~3 epochs, half-life ~69 steps):
    #: enough to smooth mini-batch noise, short enough to follow the plateau schedule
    #: (patience 5 epochs). Lightning's 0.999 would span the whole run and mostly remember
    #: the under-trained early weights.
    ema_decay: float = Field(0.99, ge=0, lt=1)
    #: First epoch (0-based) whose optimizer steps enter the average; for swa also where
    #: swa_lr takes over. 1 skips the first, fastest-moving epoch.
    start_epoch: int = Field(1, ge=0)
    #: swa only: constant learning rate from start_epoch on (torch SWALR, replacing the
    #: scheduler). null keeps the configured schedule, so the online model is unchanged.
    swa_lr: float | None = Field(None, gt=0)
    #: topk_avg only: how many of the best checkpoints are averaged (uniform weights).
    topk: int = Field(3, ge=1)

    @field_validator("method", mode="before")
    @classmethod
    def _known_method(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in AVERAGING_METHODS:
            close = difflib.get_close_matches(value, AVERAGING_METHODS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"unknown method '{value}'; {hint}choose from {', '.join(AVERAGING_METHODS)}"
            )
        return value

    @model_validator(mode="after")
    def _swa_lr_needs_swa(self) -> VarianceReductionConfig:
        if self.swa_lr is not None and self.method != "swa":
            raise ValueError(f"swa_lr applies to method swa only (method is {self.method})")
        return self


class FinetunePhase1Config(_Section):
    """Fine-tune phase 1: dotted overrides applied to the sweep winner's params."""

    overrides: dict[str, Any] = {
        "optimizer.learning_rate": 0.001,
        "scheduler.patience": 8,
        "trainer.max_epochs": 15,
    }


class FinetunePhase2Config(_Section):
    """Fine-tune phase 2: one run per seed from ``resume_from``, with its own overrides."""

    seeds: list[int] = [101, 555, 888]
    resume_from: Literal["sweep_best", "phase1_best"] = "sweep_best"
    overrides: dict[str, Any] = {"optimizer.learning_rate": 0.001, "trainer.max_epochs": 10}


class FinetuneConfig(_Section):
    """Both fine-tuning phases; ``enabled: false`` makes their stages write skipped runs."""

    enabled: bool = True
    phase1: FinetunePhase1Config = FinetunePhase1Config()
    phase2: FinetunePhase2Config = FinetunePhase2Config()


class LoggingConfig(_Section):
    """Console progress of training runs and Lightning's logging interval."""

    progress: Literal["compact", "bar", "none"] = "compact"
    log_every_n_steps: int = Field(10, ge=1)


class MlflowConfig(_Section):
    """Optional MLflow logging of training runs, outside the DVC-tracked run folders."""

    enabled: bool = False
    tracking_uri: str = "./mlruns"
    experiment: str = "graphqa"
    run_name: str | None = None
    #: Log the coverage report, feature metadata and top checkpoints at the end of each run.
    log_artifacts: bool = True
    tags: dict[str, str] = {}


class SweepConfig(_Section):
    """Seeds x named variants; each variant is a mapping of dotted overrides."""

    seeds: list[int] = [0, 1, 2]
    variants: dict[str, dict[str, Any]] = {"base": {}}

    @model_validator(mode="after")
    def _non_empty(self) -> SweepConfig:
        if not self.seeds:
            raise ValueError("at least one seed is required")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        if not self.variants:
            raise ValueError("at least one variant is required")
        return self


class FltConfig(_Section):
    """Feature Lottery Ticket: group scoring, masks per keep fraction, pruned retrains."""

    group_mode: Literal["slot", "column"] = "slot"
    apply_to: list[Literal["node", "topology", "edge"]] = ["topology", "edge"]
    drop_basic: bool = False
    method: Literal["permutation", "weight_magnitude"] = "permutation"
    permutation_repeats: int = Field(3, ge=1)
    seed: int = 0  # permutation shuffles and the bootstrap over val targets
    #: Every keep fraction is retrained once per seed (``dataloader.seed``); the verdicts pair
    #: each fraction with the unpruned retrain of the same seed.
    seeds: list[int] = [0, 1, 2]
    keep_fracs: list[float] = [1.0, 0.7, 0.5, 0.3]
    loss_tolerance: float = Field(0.01, ge=0)
    spearman_tolerance: float = Field(0.01, ge=0)
    retrain_overrides: dict[str, Any] = {}
    adopt: bool = False  # true: calibration, bundle and evaluation use the recommended retrain

    @field_validator("keep_fracs", mode="before")
    @classmethod
    def _written_as_floats(cls, value: Any) -> Any:
        # They name DVC stages and files; DVC writes 1 as "1" but 1.0 as "1.0".
        if isinstance(value, list) and any(isinstance(v, int) for v in value):
            raise ValueError("write keep fractions as floats (1.0, not 1)")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> FltConfig:
        if not self.keep_fracs or any(not 0 < f <= 1 for f in self.keep_fracs):
            raise ValueError("keep_fracs must be non-empty fractions in (0, 1]")
        if len(set(self.keep_fracs)) != len(self.keep_fracs):
            raise ValueError("keep_fracs must be unique")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be a non-empty list of unique integers")
        return self


class CalibrationConfig(_Section):
    """Fitted on the val_calib split only (never val or test)."""

    method: Literal["temperature", "isotonic", "none"] = "temperature"
    fit_bias: bool = True
    loss: Literal["bce", "mse"] = "bce"
    acceptable_dockq: float = Field(0.23, gt=0, lt=1)
    threshold_criterion: Literal["f1", "mcc"] = "f1"
    coverage: float = Field(0.9, gt=0, lt=1)
    #: How an interval's width scales per model: sqrt(p(1-p)) + floor, the spread of its
    #: target's predictions, or constant (see graphqa.maths.calibration.grouped_conformal_quantile).
    interval_scale: Literal["none", "pvar", "target_spread"] = "pvar"
    reliability_bins: int = Field(10, ge=2)


class EvaluateConfig(_Section):
    """Stage ``evaluate``: scoring batch size and the bootstrap behind the test intervals."""

    batch_size: int = Field(64, ge=1)
    bootstrap_resamples: int = Field(2000, ge=100)  # resamples of test targets for 95 % CIs
    bootstrap_seed: int = 0


class TreesRecipe(_Section):
    """One LightGBM recipe on pooled graph features (:mod:`graphqa.trees`).

    Small, regularised boosting (the pooled targets hold hundreds to thousands of graphs).
    With ``deterministic`` LightGBM, fixed threads and ``seed`` (bagging included) the model
    file is byte-stable.
    """

    #: gbdt: gradient boosting; rf: random-forest mode (needs row bagging below).
    boosting: Literal["gbdt", "rf"] = "gbdt"
    num_leaves: int = Field(15, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_rounds: int = Field(500, ge=1)
    #: Stop once the inner fold's metric has not improved for this many rounds.
    early_stopping_rounds: int = Field(30, ge=1)
    min_data_in_leaf: int = Field(10, ge=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    #: Row bagging (seeded): fraction of rows per tree, every ``bagging_freq`` rounds (0: off).
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    bagging_freq: int = Field(0, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    #: regression: squared error; cross_entropy: DockQ as a soft label; lambdarank: per-target
    #: ranking (the target is the query group, DockQ graded by the CAPRI classes).
    objective: Literal["regression", "cross_entropy", "lambdarank"] = "regression"
    seed: int = 0
    num_threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _rf_bags(self) -> TreesRecipe:
        if self.boosting == "rf" and (self.bagging_freq < 1 or self.bagging_fraction >= 1.0):
            raise ValueError(
                "boosting rf needs row bagging: bagging_freq >= 1 and bagging_fraction < 1"
            )
        return self


class TreesConfig(TreesRecipe):
    """Stage ``trees``: a small grid of LightGBM recipes, each judged on out-of-fold
    predictions over the ``cv`` folds; the best ships, refitted on every pooled target.

    The keys outside ``grid`` are the base recipe; each grid entry overrides some of them.
    """

    #: name -> overrides of the base recipe. Every entry is fitted once per cv fold.
    grid: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"gbdt": {}})

    @model_validator(mode="after")
    def _grid_entries_valid(self) -> TreesConfig:
        if not self.grid:
            raise ValueError("trees.grid needs at least one entry ({} = the base recipe)")
        for name in self.grid:
            self.recipe(name)
        return self

    def recipe(self, name: str) -> TreesRecipe:
        """The base recipe with grid entry ``name``'s overrides applied (validated)."""
        base = self.model_dump(exclude={"grid"})
        overrides = self.grid[name]
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise ValueError(f"trees.grid.{name}: unknown key(s) {unknown}")
        try:
            return TreesRecipe.model_validate({**base, **overrides})
        except ValidationError as err:
            raise ValueError(f"trees.grid.{name}: {err.errors()[0]['msg']}") from None


class CvConfig(_Section):
    """Out-of-fold evidence (:mod:`graphqa.cv`): every labelled target outside test and
    val_calib (train, val and tuning pooled) falls into one of ``folds`` target-grouped folds,
    balanced by target count and by each target's best DockQ.

    ``fold_ids`` lists the folds as DVC's ``matrix`` needs a list: it must be
    ``0 .. folds - 1`` (one cached ``cv@<id>`` stage each).
    """

    folds: int = Field(5, ge=3)
    fold_ids: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    seed: int = 0

    @model_validator(mode="after")
    def _ids_match(self) -> CvConfig:
        if self.fold_ids != list(range(self.folds)):
            raise ValueError(
                f"cv.fold_ids must be {list(range(self.folds))} for cv.folds {self.folds} "
                f"(got {self.fold_ids})"
            )
        return self


class Params(_Section):
    """The whole of ``params.yaml``, one attribute per section (``schema`` is
    ``schema_check`` in Python).
    """

    paths: PathsConfig = PathsConfig()
    dataset: DatasetConfig = DatasetConfig()
    schema_check: SchemaConfig = Field(SchemaConfig(), alias="schema")
    edge_schema: EdgeSchemaConfig = EdgeSchemaConfig()
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    model: ModelConfig = ModelConfig()
    dataloader: DataloaderConfig = DataloaderConfig()
    trainer: TrainerConfig = TrainerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    loss: LossConfig = LossConfig()
    selection: SelectionConfig = SelectionConfig()
    variance_reduction: VarianceReductionConfig = VarianceReductionConfig()
    logging: LoggingConfig = LoggingConfig()
    mlflow: MlflowConfig = MlflowConfig()
    sweep: SweepConfig = SweepConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    flt: FltConfig = FltConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    trees: TreesConfig = TreesConfig()
    cv: CvConfig = CvConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _averaged_metrics_exist(self) -> Params:
        """Ranking by an ``ema_*`` metric needs runs that average their weights."""
        if self.variance_reduction.method != "none":
            return self
        sel = self.selection
        asked = [("selection.primary_metric", sel.primary_metric)]
        if sel.shortlist.enabled:
            asked += [("selection.shortlist.by", sel.shortlist.by)]
            asked += [("selection.shortlist.then", sel.shortlist.then)]
        for key, metric in asked:
            if metric.startswith("ema_"):
                raise ValueError(
                    f"{key} is {metric}, a metric of averaged weights, but "
                    "variance_reduction.method is none; set a method (ema, swa, topk_avg) "
                    "or rank by a val_* metric"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-able dict with the same keys as ``params.yaml``."""
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------------------------
# Loading, overrides and readable errors


def _section_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Public key -> annotation for a section (aliases are what users write)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic class whose keys live at ``loc`` (None for free-form mappings)."""
    model: type[BaseModel] = Params
    for key in loc:
        info = _section_fields(model).get(str(key))
        if info is None:
            return None
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def suggest_key(loc: tuple[str | int, ...]) -> str | None:
    """Closest valid key name for an unknown key at ``loc`` (last element is the bad key)."""
    parent = _model_at(loc[:-1])
    if parent is None:
        return None
    matches = difflib.get_close_matches(str(loc[-1]), list(_section_fields(parent)), n=1)
    return matches[0] if matches else None


def _format_errors(err: ValidationError, source: str) -> str:
    """One line: the file, then every problem with its dotted key (and the fix when known)."""
    problems = []
    for item in err.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        if item["type"] == "extra_forbidden":
            hint = suggest_key(loc)
            did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
            problems.append(f"unknown key '{dotted}'{did_you_mean}")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{dotted}: {item['msg']}{shown}")
    return f"{source}: invalid configuration: " + "; ".join(problems)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections that are absent."""
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``raw`` with dotted overrides applied (validated later with the rest)."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        set_dotted(result, dotted, value)
    return result


def parse_params(
    raw: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "params.yaml",
) -> Params:
    """Validate a raw mapping (plus dotted overrides) into :class:`Params`."""
    data = apply_overrides(raw or {}, overrides or {})
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(
    path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None
) -> Params:
    """Read and validate ``params.yaml``; errors name the file, key path and the fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:  # an empty file: all defaults
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, overrides, source=str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` from the command line, value parsed as YAML (so 0.1 is a float)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.path=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
