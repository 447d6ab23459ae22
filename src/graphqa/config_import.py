"""``graphqa config import``: bring a training-stack config (and its sweep manifest) over.

Users arrive with configs written for the seeds' training stack, in its structured layout
(``paths.graph``, ``trainer.num_epochs``, ``coverage.fail_on_missing``, ...) or the legacy flat
one (``graph_dir``, ``batch_size``, ``num_epochs``, ...). Both are translated through one
declarative table per layout (old key -> graphqa key, optional converter, or "no equivalent"
with the reason), so what is and is not carried over is readable in one place and every key is
accounted for: mapped, named as having no equivalent, or refused with a suggestion. The result
is overlaid on the current ``params.yaml`` (comments and order kept), validated with graphqa's
own schema, and only then written, atomically.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from graphqa.config import ConfigError, Params, apply_overrides, parse_override, set_dotted
from graphqa.files import write_text_atomic

Layout = Literal["structured", "flat"]


class ConfigImportError(ConfigError):
    """An old config or manifest that cannot be brought over; names file, key and the fix.

    Same message shape as :class:`graphqa.contract.DataContractError`, without importing torch
    (this runs from ``graphqa config``, which should answer instantly).
    """

    def __init__(self, file: str | Path, key: str, expected: str, got: str | None = None):
        self.file, self.key, self.expected, self.got = str(file), key, expected, got
        detail = f"{self.file}: '{key}': expected {expected}"
        super().__init__(detail + (f", got {got}" if got is not None else ""))


# --------------------------------------------------------------------------------------------
# Converters: old value -> graphqa value (plus a note shown on the mapping line)


@dataclass(frozen=True)
class Context:
    """Where the old file lives and where params.yaml goes (relative paths are rebased)."""

    source: Path
    out_dir: Path


Converter = Callable[[Any, Context], tuple[Any, str]]


def _path(value: Any, ctx: Context) -> tuple[Any, str]:
    """The stack resolved relative paths against the config's folder; params.yaml's are
    relative to the repo (DVC's working directory), so rebase them to keep the same file."""
    if value is None:
        return None, ""
    if not isinstance(value, str) or not value:
        raise ValueError("a path string")
    if os.path.isabs(value):
        return value, ""
    target = os.path.normpath(os.path.join(ctx.source.parent.absolute(), value))
    rebased = os.path.relpath(target, ctx.out_dir.absolute())
    note = "" if rebased == os.path.normpath(value) else f"(was {value!r}, relative to the config)"
    return rebased, note


def _negate(value: Any, ctx: Context) -> tuple[Any, str]:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return (not value), "(negated)"


def _percent(value: Any, ctx: Context) -> tuple[Any, str]:
    """The stack read values <= 1 as fractions and larger ones as percentages."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number (percent, or a fraction <= 1)")
    if 0 < value <= 1:
        return float(value) * 100.0, f"({value} read as a fraction, as the training stack did)"
    return float(value), ""


def _min_groups(value: Any, ctx: Context) -> tuple[Any, str]:
    """The stack's 0 meant "no minimum"; graphqa's smallest minimum is one target."""
    if value == 0 and not isinstance(value, bool):
        return 1, "(0 meant no minimum; graphqa's least is 1)"
    return value, ""


#: The stack's metric names for graphqa's per-target ranking metrics (same definitions).
METRIC_RENAMES = {"val_rank_spearman": "val_target_spearman", "val_rank_regret": "val_regret"}


def _metric(value: Any, ctx: Context) -> tuple[Any, str]:
    if not isinstance(value, str):
        raise ValueError("a metric name")
    name = value.strip().lower()
    renamed = METRIC_RENAMES.get(name, name)
    return renamed, (f"(graphqa's name for {name})" if renamed != name else "")


# --------------------------------------------------------------------------------------------
# The mapping tables


@dataclass(frozen=True)
class Rule:
    """One old key: its graphqa key and converter, or (``new`` is None) why it has none.

    An old key ending in ``.*`` stands for a whole section with no equivalent.
    """

    new: str | None
    convert: Converter | None = None
    why: str = ""


def to(new: str, convert: Converter | None = None) -> Rule:
    """Table entry for an old key that maps onto graphqa's ``new`` key.

    Args:
        new: the dotted graphqa key.
        convert: turns the old value into graphqa's (value, note); ``None`` copies it.

    Returns:
        The rule.
    """
    return Rule(new=new, convert=convert)


def gone(why: str) -> Rule:
    """Table entry for an old key graphqa has no equivalent of, so the import can say why.

    Args:
        why: the reason shown to the user.

    Returns:
        The rule (``new`` is None).
    """
    return Rule(new=None, why=why)


SAVE_DIR = gone("DVC decides output folders (runs/ and data/ in dvc.yaml)")
PROGRESS = gone("graphqa's console output is set by logging.progress (compact|bar|none)")
NO_SELF_LOOPS = gone("graphqa's GATv2 layers add no self-loops (not configurable)")
ALWAYS_RESIDUAL = gone("graphqa's GATv2 layers are always residual")
CANONICAL = gone("graphqa loads graphs as stored; the manifest check is order-agnostic")
DEBUG_SWITCH = gone("a one-off debugging switch of the old trainer, not a pipeline setting")

#: Keys both layouts share (sections the flat layout kept nested, and a few top-level ones).
COMMON_RULES: dict[str, Rule] = {
    "seed": to("dataloader.seed"),
    "metadata_path": to("paths.metadata_path", _path),
    "summary_path": to("paths.summary_path", _path),
    "tuning.labels": to("paths.tuning_labels", _path),
    "tuning.min_groups_ge2": to("selection.min_tuning_groups", _min_groups),
    "tuning.min_groups": to("selection.min_tuning_groups", _min_groups),
    "tuning.max_samples": gone("graphqa scores the whole tuning split every epoch"),
    "tuning.fraction": gone("graphqa scores the whole tuning split every epoch"),
    "tuning.eval_every": gone("graphqa scores the whole tuning split every epoch"),
    "coverage.fail_on_missing": to("schema.allow_missing_graphs", _negate),
    "coverage.minimum_percent": to("schema.min_coverage_percent", _percent),
    "coverage.minimum": to("schema.min_coverage_percent", _percent),
    "edge_schema.use_layer_norm": to("edge_schema.use_layer_norm"),
    "edge_schema.dim": gone("computed from the graphs' metadata by the schema stage"),
    "edge_schema.module": gone("read from graph_metadata.json by the schema stage"),
    "edge_schema.module_params": gone("read from graph_metadata.json by the schema stage"),
    "topology_schema.*": gone("topology columns come from topology_columns.json"),
    "feature_mask.path": to("feature_mask.path", _path),
    "feature_mask.apply_to": to("feature_mask.apply_to"),
    "feature_mask.strict": to("feature_mask.strict"),
    "ranking_loss.weight": to("loss.ranking_weight"),
    "ranking_loss.margin": to("loss.ranking_margin"),
    "ranking_loss.mode": gone("graphqa's ranking loss is always the pairwise hinge"),
    "ranking_loss.grouped": gone("graphqa's ranking loss always pairs decoys of one target"),
    "variance_reduction.*": gone("graphqa keeps the selected epoch's weights (no averaging)"),
    "profiling.*": gone("graphqa does not profile graph loading"),
    "cache.*": gone("the schema stage packs graphs once; there is no load cache to size"),
    "mlflow.enabled": to("mlflow.enabled"),
    "mlflow.tracking_uri": to("mlflow.tracking_uri"),
    "mlflow.experiment": to("mlflow.experiment"),
    "mlflow.run_name": to("mlflow.run_name"),
    "mlflow.tags": to("mlflow.tags"),
    "mlflow.log_artifacts": to("mlflow.log_artifacts"),
}

#: Seed 000's ``config.yaml`` layout and its fuller form.
STRUCTURED_RULES: dict[str, Rule] = {
    **COMMON_RULES,
    "paths.graph": to("paths.graph_dir", _path),
    "paths.train_labels": to("paths.train_labels", _path),
    "paths.val_labels": to("paths.val_labels", _path),
    "paths.tuning_labels": to("paths.tuning_labels", _path),
    "paths.metadata": to("paths.metadata_path", _path),
    "paths.summary": to("paths.summary_path", _path),
    "paths.save_dir": SAVE_DIR,
    "model.pooling_type": to("model.pooling_type"),
    "model.attention_head": to("model.attention_head"),
    "model.hidden_dim": to("model.hidden_dim"),
    "model.num_layers": to("model.num_layers"),
    "model.dropout": to("model.dropout"),
    "model.self_loops": NO_SELF_LOOPS,
    "model.self_loop_fill": NO_SELF_LOOPS,
    "model.residual": ALWAYS_RESIDUAL,
    "dataloader.batch_size": to("dataloader.batch_size"),
    "dataloader.num_workers": to("dataloader.num_workers"),
    "dataloader.seed": to("dataloader.seed"),
    "dataloader.canonicalize_on_load": CANONICAL,
    "trainer.accelerator": to("trainer.accelerator"),
    "trainer.devices": to("trainer.devices"),
    "trainer.precision": to("trainer.precision"),
    "trainer.num_epochs": to("trainer.max_epochs"),
    "trainer.accumulate_grad_batches": to("trainer.accumulate_grad_batches"),
    "trainer.use_val_spearman_as_secondary": to("selection.use_val_spearman"),
    "trainer.spearman_secondary_min_delta": to("selection.spearman_min_delta"),
    "trainer.spearman_secondary_weight": to("selection.spearman_weight"),
    "optimizer.learning_rate": to("optimizer.learning_rate"),
    "optimizer.weight_decay": to("optimizer.weight_decay"),
    "scheduler.type": to("scheduler.type"),
    "scheduler.factor": to("scheduler.factor"),
    "scheduler.patience": to("scheduler.patience"),
    "scheduler.min_lr": to("scheduler.min_lr"),
    "early_stopping.patience": to("early_stopping.patience"),
    "selection.use_val_spearman": to("selection.use_val_spearman"),
    "selection.spearman_min_delta": to("selection.spearman_min_delta"),
    "selection.spearman_weight": to("selection.spearman_weight"),
    "selection.primary_metric": to("selection.primary_metric", _metric),
    "logging.progress_bar_refresh_rate": PROGRESS,
    "logging.log_every_n_steps": to("logging.log_every_n_steps"),
}

#: The legacy flat layout (top-level keys; seed 000 promises these keep working).
FLAT_RULES: dict[str, Rule] = {
    **COMMON_RULES,
    "graph_dir": to("paths.graph_dir", _path),
    "train_labels": to("paths.train_labels", _path),
    "train_label_file": to("paths.train_labels", _path),
    "val_labels": to("paths.val_labels", _path),
    "val_label_file": to("paths.val_labels", _path),
    "tuning_labels": to("paths.tuning_labels", _path),
    "tuning_label_file": to("paths.tuning_labels", _path),
    "save_dir": SAVE_DIR,
    "accelerator": to("trainer.accelerator"),
    "devices": to("trainer.devices"),
    "precision": to("trainer.precision"),
    "pooling_type": to("model.pooling_type"),
    "attention_head": to("model.attention_head"),
    "hidden_dim": to("model.hidden_dim"),
    "num_layers": to("model.num_layers"),
    "dropout": to("model.dropout"),
    "self_loops": NO_SELF_LOOPS,
    "self_loop_fill": NO_SELF_LOOPS,
    "residual": ALWAYS_RESIDUAL,
    "batch_size": to("dataloader.batch_size"),
    "num_workers": to("dataloader.num_workers"),
    "canonicalize_on_load": CANONICAL,
    "num_epochs": to("trainer.max_epochs"),
    "accumulate_grad_batches": to("trainer.accumulate_grad_batches"),
    "learning_rate": to("optimizer.learning_rate"),
    "weight_decay": to("optimizer.weight_decay"),
    "lr_scheduler_type": to("scheduler.type"),
    "lr_scheduler_factor": to("scheduler.factor"),
    "lr_scheduler_patience": to("scheduler.patience"),
    "early_stopping_patience": to("early_stopping.patience"),
    "use_val_spearman_as_secondary": to("selection.use_val_spearman"),
    "spearman_secondary_min_delta": to("selection.spearman_min_delta"),
    "spearman_secondary_weight": to("selection.spearman_weight"),
    "selection_primary_metric": to("selection.primary_metric", _metric),
    "progress_bar_refresh_rate": PROGRESS,
    "log_every_n_steps": to("logging.log_every_n_steps"),
    "fast_dev_run": DEBUG_SWITCH,
    "limit_train_batches": DEBUG_SWITCH,
    "limit_val_batches": DEBUG_SWITCH,
    "log_lr": DEBUG_SWITCH,
}

RULES: dict[Layout, dict[str, Rule]] = {"structured": STRUCTURED_RULES, "flat": FLAT_RULES}

#: A sweep manifest's keys (top level, per job and under ``shared``).
MANIFEST_TOP_KEYS = {
    "jobs": "",
    "shared": "",
    "continue_on_error": "DVC stops at the first failing stage (`dvc repro --keep-going` not)",
}
RUN_FOLDER = "DVC names run folders runs/train/<seed>-<variant>"
MANIFEST_JOB_KEYS = {
    "name": "",
    "config": "",
    "overrides": "",
    "run_name": RUN_FOLDER,
    "output_root": RUN_FOLDER,
    "notes": "graphqa keeps no per-run notes (use the commit message)",
    "trial_label": "graphqa keeps no per-run notes (use the commit message)",
    "resume_from": "the finetune stages resume the sweep winner (finetune.*)",
    "fast_dev_run": DEBUG_SWITCH.why,
    "limit_train_batches": DEBUG_SWITCH.why,
    "limit_val_batches": DEBUG_SWITCH.why,
    "log_lr": DEBUG_SWITCH.why,
    "trainer_args": DEBUG_SWITCH.why,
}

#: Variants share one packed dataset (the schema stage), so they cannot move these.
SHARED_DATA_PREFIXES = ("paths.", "schema.", "dataset.")


def detect_layout(raw: Mapping[str, Any]) -> Layout:
    """The stack's own rule: a ``paths`` section means the structured layout."""
    return "structured" if isinstance(raw.get("paths"), Mapping) else "flat"


# --------------------------------------------------------------------------------------------
# Mapping one config


@dataclass(frozen=True)
class Mapped:
    """An old key carried over: its graphqa key, the converted value and a note (if any)."""

    old: str
    new: str
    value: Any
    note: str = ""

    def line(self) -> str:
        note = f"  {self.note}" if self.note else ""
        return f"{self.old} -> {self.new} = {json.dumps(self.value)}{note}"


@dataclass(frozen=True)
class Dropped:
    """An old key with no graphqa equivalent, and why, so the import can list it."""

    old: str
    why: str

    def line(self) -> str:
        return f"{self.old}: {self.why}"


@dataclass
class ConfigMapping:
    """What one old config becomes: graphqa values, and the keys that have no equivalent."""

    source: Path
    layout: Layout
    mapped: list[Mapped] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    kept: list[Mapped] = field(default_factory=list)  # paths left alone (--keep-paths)

    def values(self) -> dict[str, Any]:
        return {m.new: m.value for m in self.mapped}


def suggest_old_key(key: str, known: list[str]) -> str | None:
    """Nearest known old key: same leaf in another section first (``batch_size`` ->
    ``dataloader.batch_size``), then the closest dotted spelling, then the closest leaf."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close[0]
    leaves = {k.rsplit(".", 1)[-1]: k for k in known}
    close = difflib.get_close_matches(leaf, list(leaves), n=1)
    return leaves[close[0]] if close else None


def _sections(rules: Mapping[str, Rule]) -> set[str]:
    """Every proper prefix of a rule's key (``a.b.c`` -> ``a``, ``a.b``)."""
    out = set()
    for key in rules:
        parts = key.removesuffix(".*").split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _walk(
    node: Mapping[str, Any], prefix: str, rules: Mapping[str, Rule], source: Path, label: str
) -> tuple[list[tuple[str, Any]], list[str], list[str]]:
    """Leaves with a rule, whole sections without an equivalent, and unknown keys."""
    sections = _sections(rules)
    leaves: list[tuple[str, Any]] = []
    whole: list[str] = []
    unknown: list[str] = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if dotted in rules:
            leaves.append((dotted, value))
        elif f"{dotted}.*" in rules:
            whole.append(dotted)
        elif dotted in sections:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigImportError(
                    source, label + dotted, "a section (a mapping)", repr(value)
                )
            sub_leaves, sub_whole, sub_unknown = _walk(value, f"{dotted}.", rules, source, label)
            leaves += sub_leaves
            whole += sub_whole
            unknown += sub_unknown
        else:
            unknown.append(dotted)
    return leaves, whole, unknown


def map_config(
    raw: Mapping[str, Any],
    ctx: Context,
    keep_paths: bool = False,
    layout: Layout | None = None,
    error_file: Path | None = None,
    label: str = "",
) -> ConfigMapping:
    """Translate one old config through its layout's table; refuse unknown keys.

    ``layout`` forces a layout (a job's overrides follow their config's); errors name
    ``error_file`` (default: the config) and prefix keys with ``label``.
    """
    layout = layout or detect_layout(raw)
    rules = RULES[layout]
    source = error_file or ctx.source
    leaves, whole, unknown = _walk(raw, "", rules, source, label)
    if unknown:
        known = [k for k in rules if not k.endswith(".*")]
        hint = suggest_old_key(unknown[0], known)
        more = f"; also unknown: {', '.join(unknown[1:])}" if unknown[1:] else ""
        did_you_mean = f"; did you mean '{label}{hint}'?" if hint else ""
        raise ConfigImportError(
            source,
            label + unknown[0],
            f"a key of the training stack's {layout} layout (unknown key{did_you_mean}{more})",
        )
    result = ConfigMapping(source=ctx.source, layout=layout)
    result.dropped += [Dropped(f"{s}.*", rules[f"{s}.*"].why) for s in whole]
    for old, value in leaves:
        rule = rules[old]
        if rule.new is None:
            result.dropped.append(Dropped(old, rule.why))
            continue
        new_value, note = value, ""
        if rule.convert is not None:
            try:
                new_value, note = rule.convert(value, ctx)
            except ValueError as exc:
                raise ConfigImportError(source, label + old, str(exc), repr(value)) from None
        mapped = Mapped(old=old, new=rule.new, value=new_value, note=note)
        clash = next((m for m in result.mapped if m.new == rule.new), None)
        if clash is not None and not _same(clash.value, new_value):
            raise ConfigImportError(
                source,
                label + old,
                f"the same value as '{label}{clash.old}' (both set graphqa's {rule.new})",
                f"{value!r} vs {clash.value!r}",
            )
        if keep_paths and rule.new.startswith("paths."):
            result.kept.append(mapped)
        else:
            result.mapped.append(mapped)
    return result


class _Missing:
    """An absent key (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigImportError(path, "<file>", "an existing YAML file", "no such file") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}" if where is not None else "<file>"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigImportError(path, at, "valid YAML", problem) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigImportError(path, "<top level>", "a mapping of keys", type(raw).__name__)
    return raw


# --------------------------------------------------------------------------------------------
# Sweep manifests


#: graphqa key -> (file, old key, old value): where a value came from, for error messages.
Origins = dict[str, tuple[Path, str, Any]]


@dataclass(frozen=True)
class JobImport:
    """One sweep-manifest job as graphqa sees it: a seed plus a variant of dotted overrides.

    Attributes:
        name: the job's name in the manifest.
        seed: its ``dataloader.seed``.
        variant: the sweep variant it joins (``base`` when it changes nothing but the seed).
        overrides: what differs from the imported config, in graphqa keys.
        origins: graphqa key -> (file, old key, old value), for error messages.
    """

    name: str
    seed: int
    variant: str
    overrides: dict[str, Any]
    origins: Origins = field(default_factory=dict, compare=False)

    def line(self) -> str:
        if not self.overrides:
            return f"job '{self.name}' -> sweep.seeds += {self.seed}"
        return (
            f"job '{self.name}' -> sweep.variants.{self.variant} = "
            f"{json.dumps(self.overrides)} (seed {self.seed} -> sweep.seeds)"
        )


@dataclass
class SweepImport:
    """A whole sweep manifest, imported: its jobs and the keys dropped on the way."""

    manifest: Path
    jobs: list[JobImport]
    dropped: list[Dropped]

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(job.seed for job in self.jobs))

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for job in self.jobs:
            out.setdefault(job.variant, job.overrides)
        return out


def _variant_name(name: str, taken: set[str]) -> str:
    """Variant names become DVC stage and folder names (``<seed>-<variant>``): keep them to
    letters, digits and ``_`` so the seed/variant split stays unambiguous."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "variant"
    candidate, i = base, 2
    while candidate in taken:
        candidate, i = f"{base}_{i}", i + 1
    return candidate


def _job_overrides(value: Any, manifest: Path, where: str) -> dict[str, Any]:
    """``key=value`` strings or a mapping (dotted or nested), as the stack accepted them."""
    nested: dict[str, Any] = {}
    if value is None:
        return nested
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigImportError(manifest, where, "key=value strings", repr(item))
            key, parsed = parse_override(item)
            set_dotted(nested, key, parsed)
        return nested
    if isinstance(value, Mapping):
        for key, parsed in value.items():
            set_dotted(nested, str(key), parsed)
        return nested
    raise ConfigImportError(manifest, where, "a list of key=value or a mapping", repr(value))


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_job_config(ref: Any, manifest: Path, where: str) -> Path:
    """Relative to the manifest's folder, then its parent (the stack kept manifests/ next to
    configs/ and ran from their common parent)."""
    if not isinstance(ref, str) or not ref:
        raise ConfigImportError(manifest, where, "a config file path", repr(ref))
    candidates = [manifest.parent / ref, manifest.parent.parent / ref]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigImportError(
        manifest, where, "a config file relative to the manifest (or its parent folder)", ref
    )


def _check_keys(
    node: Mapping[str, Any], allowed: Mapping[str, str], manifest: Path, where: str
) -> list[Dropped]:
    dropped = []
    for key in node:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ConfigImportError(
                manifest, f"{where}{key}", f"a sweep manifest key (unknown key{did_you_mean})"
            )
        if allowed[key]:
            dropped.append(Dropped(f"{where}{key}", allowed[key]))
    return dropped


def import_sweep(
    manifest: Path, base: ConfigMapping, default_seed: int, out_dir: Path, keep_paths: bool
) -> SweepImport:
    """Jobs that only change the seed become seeds; the others become named variants holding
    what differs (in graphqa keys) from the imported config."""
    raw = read_yaml_mapping(manifest)
    dropped = _check_keys(raw, MANIFEST_TOP_KEYS, manifest, "")
    jobs_raw = raw.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        raise ConfigImportError(manifest, "jobs", "a non-empty list of jobs", repr(jobs_raw))
    shared = raw.get("shared") or {}
    if not isinstance(shared, Mapping):
        raise ConfigImportError(manifest, "shared", "a mapping", repr(shared))
    dropped += _check_keys(shared, MANIFEST_JOB_KEYS, manifest, "shared.")
    shared_overrides = _job_overrides(shared.get("overrides"), manifest, "shared.overrides")
    base_values = base.values()
    base_seed = base_values.get("dataloader.seed", default_seed)
    jobs: list[JobImport] = []
    variants: dict[tuple[tuple[str, str], ...], str] = {}
    taken: set[str] = {"base"}
    for i, job in enumerate(jobs_raw):
        where = f"jobs[{i}]"
        if not isinstance(job, Mapping):
            raise ConfigImportError(manifest, where, "a mapping (name, config, overrides)")
        dropped += _check_keys(job, MANIFEST_JOB_KEYS, manifest, f"{where}.")
        name = str(job.get("name") or f"job_{i + 1}")
        ref = job.get("config") or shared.get("config")
        config_path = base.source if ref is None else _resolve_job_config(ref, manifest, where)
        overrides = _deep_merge(
            shared_overrides, _job_overrides(job.get("overrides"), manifest, f"{where}.overrides")
        )
        ctx = Context(source=config_path, out_dir=out_dir)
        from_config = map_config(read_yaml_mapping(config_path), ctx, keep_paths)
        from_overrides = map_config(
            overrides,
            ctx,
            keep_paths,
            layout=from_config.layout,
            error_file=manifest,
            label=f"{where}.overrides.",
        )
        known = {d.old for d in base.dropped} | {d.old for d in dropped}
        dropped += [
            Dropped(d.old, f"{d.why} (in {config_path.name})")
            for d in from_config.dropped + from_overrides.dropped
            if d.old not in known
        ]
        values = {**from_config.values(), **from_overrides.values()}
        origins: Origins = {m.new: (config_path, m.old, m.value) for m in from_config.mapped}
        origins.update(
            {
                m.new: (manifest, f"{where}.overrides.{m.old}", m.value)
                for m in from_overrides.mapped
            }
        )
        seed = values.pop("dataloader.seed", base_seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            file, key, _ = origins["dataloader.seed"]
            raise ConfigImportError(file, key, "an integer seed", repr(seed))
        diff = {k: v for k, v in values.items() if not _same(base_values.get(k, _MISSING), v)}
        moved = [k for k in diff if k.startswith(SHARED_DATA_PREFIXES)]
        if moved:
            raise ConfigImportError(
                manifest,
                f"{where} ({name})",
                "a job that keeps the imported config's data: sweep variants share one packed "
                "dataset (import this job's config on its own, or use --keep-paths for paths)",
                ", ".join(f"{origins[k][1]} -> {k}" for k in moved),
            )
        signature = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in diff.items()))
        if not diff:
            variant = "base"
        elif signature in variants:
            variant = variants[signature]
        else:
            variant = _variant_name(name, taken)
            taken.add(variant)
            variants[signature] = variant
        jobs.append(JobImport(name, seed, variant, diff, origins))
    return SweepImport(manifest=manifest, jobs=jobs, dropped=dropped)


# --------------------------------------------------------------------------------------------
# Writing params.yaml: overlay on the current file, keep its comments, validate, swap in


def _yaml() -> YAML:
    y = YAML()  # round-trip: comments, order and flow style of untouched keys survive
    y.width = 4096  # never re-wrap long flow mappings
    y.representer.add_representer(type(None), _represent_null)
    y.representer.add_representer(float, _represent_float)
    y.representer.add_representer(str, _represent_str)
    return y


def _represent_null(rep: Any, _: None) -> Any:
    return rep.represent_scalar("tag:yaml.org,2002:null", "null")


def _represent_float(rep: Any, value: float) -> Any:
    """Floats PyYAML (graphqa's loader, YAML 1.1) also reads as floats: ``1.0e-05``, not
    ``1e-05`` (a string there)."""
    if math.isnan(value):
        text = ".nan"
    elif math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
    return rep.represent_scalar("tag:yaml.org,2002:float", text)


def _represent_str(rep: Any, value: str) -> Any:
    """Quote strings that YAML 1.1 would read as something else (``yes``, ``1e5``, ...)."""
    try:
        plain_ok = value != "" and yaml.safe_load(value) == value and "\n" not in value
    except yaml.YAMLError:
        plain_ok = False
    return rep.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain_ok else '"')


def _is_flat(value: Any) -> bool:
    items = value.values() if isinstance(value, Mapping) else value
    return all(not isinstance(v, Mapping | list) or not v for v in items)


def _styled(value: Any) -> Any:
    """Containers in params.yaml's style: flow (``[0, 1]``, ``{a: 1}``) when they hold only
    scalars, block otherwise."""
    if isinstance(value, Mapping):
        node = CommentedMap((k, _styled(v)) for k, v in value.items())
        if _is_flat(value):
            node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v) for v in value)
        if _is_flat(value):
            seq.fa.set_flow_style()
        return seq
    return value


def _get_path(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _overlay(doc: CommentedMap, path: tuple[str, ...], value: Any, base_file: Path) -> bool:
    """Set one value in the round-trip document; False when it already had that value."""
    node = doc
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = CommentedMap()
            node[part] = child
        elif not isinstance(child, Mapping):
            raise ConfigImportError(base_file, ".".join(path[: i + 1]), "a section (a mapping)")
        node = child
    if _same(node.get(path[-1], _MISSING), value):
        return False
    node[path[-1]] = _styled(value)
    return True


def _explain(err: ValidationError, fallback: Path, origins: Origins) -> ConfigImportError:
    """The first validation error, in the old file's key when the value came from there."""
    item = err.errors()[0]
    dotted = ".".join(str(p) for p in item["loc"])
    more = f"; +{len(err.errors()) - 1} more" if len(err.errors()) > 1 else ""
    new = next((k for k in origins if dotted == k or dotted.startswith(k + ".")), None)
    if item["type"] == "extra_forbidden":
        expected = f"a key this graphqa version has (graphqa has no '{dotted}')"
    else:
        msg = item["msg"][:1].lower() + item["msg"][1:]
        expected = f"a valid graphqa {dotted} ({msg}{more})"
    if new is not None:
        file, old, value = origins[new]
        return ConfigImportError(file, old, expected, repr(value))
    return ConfigImportError(fallback, dotted, expected, repr(item.get("input")))


@dataclass
class ImportReport:
    """Everything ``graphqa config import`` did, for printing (and for tests)."""

    mapping: ConfigMapping
    base: Path | None
    out: Path
    sweep: SweepImport | None
    changed: list[str]
    written: bool

    def lines(self) -> list[str]:
        m = self.mapping
        base = self.base if self.base is not None else "graphqa's defaults"
        lines = [f"importing {m.source} ({m.layout} layout) onto {base}", "mapped:"]
        lines += [f"  {x.line()}" for x in m.mapped] or ["  (nothing)"]
        dropped = m.dropped + (self.sweep.dropped if self.sweep else [])
        if dropped:
            lines.append("no equivalent (not imported):")
            lines += [f"  {d.line()}" for d in dropped]
        if m.kept:
            lines.append("kept (--keep-paths):")
            lines += [f"  {x.old} -> {x.new}: current value kept" for x in m.kept]
        if self.sweep is not None:
            sw = self.sweep
            lines.append(f"sweep from {sw.manifest}:")
            lines += [f"  {job.line()}" for job in sw.jobs]
            lines.append(f"  sweep.seeds = {json.dumps(sw.seeds)}")
            lines.append(f"  sweep.variants = {json.dumps(sw.variants)}")
            runs = len(sw.seeds) * len(sw.variants)
            if runs != len(sw.jobs):
                lines.append(
                    f"  note: graphqa trains every variant with every seed: {len(sw.seeds)} "
                    f"seeds x {len(sw.variants)} variants = {runs} runs "
                    f"(the manifest listed {len(sw.jobs)} jobs)"
                )
        if not self.changed:
            lines.append(f"{self.out}: already up to date, not rewritten")
        elif self.written:
            lines.append(
                f"wrote {self.out}: {len(self.changed)} values changed, every other key kept"
            )
        else:
            lines.append(
                f"dry run: {self.out} not written ({len(self.changed)} values would change)"
            )
        return lines


def import_config(
    old: str | Path,
    manifest: str | Path | None = None,
    out: str | Path = "params.yaml",
    keep_paths: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Map ``old`` (and ``manifest``) onto the current params and write ``out`` atomically.

    The base is ``out`` when it exists, else ``./params.yaml``, else graphqa's defaults. Any
    error leaves ``out`` untouched.
    """
    old, out = Path(old), Path(out)
    base_path = out if out.is_file() else Path("params.yaml")
    base_path = base_path if base_path.is_file() else None
    y = _yaml()
    if base_path is not None:
        try:
            doc = y.load(base_path.read_text())
        except Exception as exc:  # ruamel raises several unrelated types for bad YAML
            raise ConfigImportError(base_path, "<file>", "valid YAML", str(exc)) from None
    else:
        doc = y.load(yaml.safe_dump(Params().to_dict(), sort_keys=False))
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigImportError(base_path or out, "<top level>", "a mapping of sections")
    base_label = base_path or out

    ctx = Context(source=old, out_dir=out.parent)
    mapping = map_config(read_yaml_mapping(old), ctx, keep_paths)
    overlay: list[tuple[tuple[str, ...], Any]] = [
        (tuple(m.new.split(".")), m.value) for m in mapping.mapped
    ]
    sweep = None
    if manifest is not None:
        current_seed = _get_path(doc, ("dataloader", "seed"))
        default_seed = current_seed if isinstance(current_seed, int) else Params().dataloader.seed
        sweep = import_sweep(Path(manifest), mapping, default_seed, out.parent, keep_paths)
        overlay += [(("sweep", "seeds"), sweep.seeds), (("sweep", "variants"), sweep.variants)]

    changed = [".".join(p) for p, v in overlay if _overlay(doc, p, v, base_label)]
    buffer = io.StringIO()
    y.dump(doc, buffer)
    text = buffer.getvalue()
    plain = yaml.safe_load(text) or {}
    for path, value in overlay:  # what graphqa will read back is what was mapped
        if not _same(_get_path(plain, path), value):
            raise ConfigImportError(out, ".".join(path), f"{value!r} after writing YAML")
    _validated_params(plain, mapping, sweep, base_label)

    written = bool(changed) and not dry_run
    if written:
        write_text_atomic(out, text)
    return ImportReport(mapping, base_path, out, sweep, changed, written)


def _validated_params(
    plain: dict[str, Any], mapping: ConfigMapping, sweep: SweepImport | None, base: Path
) -> None:
    """graphqa's own schema on the result, and on the result with each variant applied."""
    try:
        Params.model_validate(plain)
    except ValidationError as err:
        origins = {m.new: (mapping.source, m.old, m.value) for m in mapping.mapped}
        raise _explain(err, base, origins) from None
    if sweep is None:
        return
    for job in sweep.jobs:
        if not job.overrides:
            continue
        try:
            Params.model_validate(apply_overrides(plain, job.overrides))
        except ValidationError as err:
            raise _explain(err, sweep.manifest, job.origins) from None
