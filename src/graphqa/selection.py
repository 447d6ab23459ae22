"""Rank finished training runs and pick the one the rest of the pipeline uses.

Ranking is by ``selection.primary_metric`` in its own direction. Ties (equal primary values)
are broken by lower ``val_loss``, then by run name, so the choice is always deterministic.
Runs whose primary metric is missing or NaN rank last. The optional shortlist mode ("option B"
in the design notes) takes the top ``k`` runs by a loss and then picks among them by a ranking
metric, so a model that ranks decoys well but is badly calibrated cannot win outright. A
``tuning_*`` metric ranks only when the runs were scored on a tuning split of at least
``selection.min_tuning_groups`` rankable targets; otherwise ``val_loss`` does, and the reason
says so (:func:`tuning_fallback`).

A sweep is seeds x variants, and one seed says little (seed-to-seed spread is large), so the
sweep is decided on *variants*: each variant's seed mean of every metric ranks the variants by
the same rule, and the winner is the best variant's best seed (:func:`choose_by_variant`).
A run whose ``summary.json`` carries an averaged model (``"averaged": {"checkpoint", "metrics"}``,
weight averaging) is also a candidate ``<run>:averaged`` of its own variant
``<variant>:averaged``, ranked on the averaged model's metrics (``ema_*`` names read as the
plain ones) and shipped with the averaged checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from graphqa.config import Params, SelectionConfig
from graphqa.files import dump_json, write_json
from graphqa.layout import (
    FEATURE_METADATA,
    METRICS,
    MODEL_CHECKPOINT,
    SUMMARY,
    ModelPaths,
    RunPaths,
)

#: metric -> "min" or "max" (which way is better)
DIRECTIONS: dict[str, str] = {
    "selection_metric": "min",
    "val_loss": "min",
    "ema_val_loss": "min",
    "val_mae": "min",
    "val_regret": "min",
    "val_spearman": "max",
    "val_pearson": "max",
    "val_target_spearman": "max",
    "val_hit_rate": "max",
    "tuning_rank_spearman": "max",
    "tuning_rank_regret": "min",
    "tuning_hit_rate_023": "max",
    "tuning_dockq_mae": "min",
}
TIE_BREAK = ("val_loss", "name")
#: Ranks instead of a tuning_* metric when the tuning split is absent or too small.
FALLBACK_METRIC = "val_loss"
HEADLINE = ("selection_metric", "val_loss", "val_spearman", "val_regret", "val_hit_rate")
#: What selection stages put in their DVC metrics file (few, so `dvc exp show` stays narrow).
METRICS_FILE_KEYS = ("selection_metric", "val_loss", "val_spearman")
#: Suffix of the candidate that is a run's averaged model.
AVERAGED = ":averaged"


@dataclass(frozen=True)
class Candidate:
    """A finished run as selection sees it."""

    name: str  # e.g. "train/0-base", "finetune_phase2/555"
    run_dir: str  # relative to the repo root
    metrics: dict[str, float | None]
    params: dict[str, Any] = field(default_factory=dict)  # leaderboard columns
    tuning_groups: int = 0  # tuning targets with >= 2 models the run was scored on (0: none)
    variant: str | None = None  # runs of one recipe over seeds share it (None: its own name)
    checkpoint: str | None = None  # the weights it ships (None: the run's best checkpoint)

    @property
    def group(self) -> str:
        """The variant whose seed mean this candidate enters."""
        return self.name if self.variant is None else self.variant

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )


def sort_key(candidate: Candidate, metric: str) -> tuple[Any, ...]:
    """Better first; missing last; ties by val_loss then name."""
    value = candidate.value(metric)
    if value is None:
        primary: tuple[int, float] = (1, 0.0)
    else:
        primary = (0, value if DIRECTIONS[metric] == "min" else -value)
    loss = candidate.value("val_loss")
    return (primary, math.inf if loss is None else loss, candidate.name)


def rank(candidates: list[Candidate], metric: str) -> list[Candidate]:
    """Candidates best first by one metric, in its direction (ties: :func:`sort_key`).

    Args:
        candidates: the candidates.
        metric: a key of :data:`DIRECTIONS`.

    Returns:
        A sorted copy; candidates missing the metric come last.

    Raises:
        ValueError: ``metric`` is not in :data:`DIRECTIONS`.
    """
    if metric not in DIRECTIONS:
        raise ValueError(f"unknown metric '{metric}'; choose from {sorted(DIRECTIONS)}")
    return sorted(candidates, key=lambda c: sort_key(c, metric))


def ranking_metric(cfg: SelectionConfig, fallback: bool) -> str:
    """The metric that finally orders candidates (``then`` in shortlist mode; ``val_loss``
    when a tuning_* metric cannot be trusted)."""
    if fallback:
        return FALLBACK_METRIC
    return cfg.shortlist.then if cfg.shortlist.enabled else cfg.primary_metric


def tuning_fallback(
    candidates: list[Candidate], cfg: SelectionConfig, tuning_groups: int | None = None
) -> str | None:
    """Why the tuning_* metric ``cfg`` ranks by cannot be trusted here (None: it can).

    A per-target tuning metric over fewer than ``min_tuning_groups`` targets is noise, so
    selection then ranks by ``val_loss``. ``tuning_groups`` overrides the count the runs
    recorded (the smallest over ``candidates``; runs without a tuning split count 0).
    """
    metric = cfg.shortlist.then if cfg.shortlist.enabled else cfg.primary_metric
    if not metric.startswith("tuning_"):
        return None
    if tuning_groups is None:
        tuning_groups = min((c.tuning_groups for c in candidates), default=0)
    if tuning_groups == 0:
        why = "no tuning split"
    elif tuning_groups < cfg.min_tuning_groups:
        why = (
            f"the tuning split has {tuning_groups} target(s) with >= 2 models, fewer than "
            f"selection.min_tuning_groups = {cfg.min_tuning_groups}"
        )
    else:
        return None
    return f"{metric} not used ({why}); ranked by {FALLBACK_METRIC} instead"


def choose(
    candidates: list[Candidate], cfg: SelectionConfig, tuning_groups: int | None = None
) -> tuple[list[Candidate], str]:
    """Ranked candidates (winner first) and a sentence saying why the winner won (and, when a
    tuning_* metric had to be replaced, why: see :func:`tuning_fallback`)."""
    if not candidates:
        raise ValueError("no finished runs to select from")
    fallback = tuning_fallback(candidates, cfg, tuning_groups)
    ranked, reason = _choose(candidates, cfg, fallback is not None)
    return ranked, reason if fallback is None else f"{reason}; fallback: {fallback}"


def _choose(
    candidates: list[Candidate], cfg: SelectionConfig, fallback: bool
) -> tuple[list[Candidate], str]:
    metric = FALLBACK_METRIC if fallback else cfg.primary_metric
    if cfg.shortlist.enabled:
        then = FALLBACK_METRIC if fallback else cfg.shortlist.then
        by_loss = rank(candidates, cfg.shortlist.by)
        shortlist = rank(by_loss[: cfg.shortlist.k], then)
        ranked = shortlist + by_loss[cfg.shortlist.k :]
        win = ranked[0]
        reason = (
            f"{win.name}: best {then} ({_short_float(win.value(then))})"
            f" among the top {cfg.shortlist.k} by {cfg.shortlist.by}"
        )
        return ranked, reason
    ranked = rank(candidates, metric)
    win = ranked[0]
    reason = (
        f"{win.name}: {'lowest' if DIRECTIONS[metric] == 'min' else 'highest'} {metric} "
        f"({_short_float(win.value(metric))})"
    )
    if len(ranked) > 1:
        runner = ranked[1]
        reason += f"; runner-up {runner.name} ({_short_float(runner.value(metric))})"
        if win.value(metric) == runner.value(metric):
            reason += f"; tie broken by {' then '.join(TIE_BREAK)}"
    return ranked, reason


def _short_float(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


@dataclass(frozen=True)
class VariantStats:
    """A variant's seed mean and sd (sample sd; None with one seed) of one metric."""

    variant: str
    metric: str
    mean: float | None
    sd: float | None
    n_seeds: int  # seeds with a value of the metric
    members: tuple[str, ...] = ()

    def text(self) -> str:
        sd = "" if self.sd is None else f" ± {self.sd:.3g}"
        return f"{_short_float(self.mean)}{sd} over {self.n_seeds} seed(s)"


def _seed_values(members: list[Candidate], metric: str) -> list[float]:
    return [v for c in members if (v := c.value(metric)) is not None]


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def variant_stats(candidates: list[Candidate], metric: str) -> dict[str, VariantStats]:
    """Per variant (:attr:`Candidate.group`), in first-seen order: seed mean ± sd of
    ``metric`` (runs without a value are left out and not counted)."""
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(cand.group, []).append(cand)
    stats = {}
    for variant, members in groups.items():
        values = _seed_values(members, metric)
        stats[variant] = VariantStats(
            variant=variant,
            metric=metric,
            mean=_mean(values),
            sd=float(statistics.stdev(values)) if len(values) > 1 else None,
            n_seeds=len(values),
            members=tuple(c.name for c in members),
        )
    return stats


def choose_by_variant(
    candidates: list[Candidate], cfg: SelectionConfig, tuning_groups: int | None = None
) -> tuple[list[Candidate], str, dict[str, VariantStats]]:
    """Rank variants on their seed means by the rule of :func:`choose` (shortlist and tuning
    fallback included), then each variant's seeds by the same rule. The winner is the best
    variant's best seed; the ranking lists variants in order, each with its seeds ranked."""
    if not candidates:
        raise ValueError("no finished runs to select from")
    fallback = tuning_fallback(candidates, cfg, tuning_groups)
    metric = ranking_metric(cfg, fallback is not None)
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(cand.group, []).append(cand)
    seed_means = [
        Candidate(
            name=variant,
            run_dir="",
            metrics={
                m: _mean(_seed_values(members, m))
                for m in sorted({k for c in members for k in c.metrics} | set(DIRECTIONS))
            },
        )
        for variant, members in groups.items()
    ]
    by_variant, variant_reason = _choose(seed_means, cfg, fallback is not None)
    within = [_choose(groups[v.name], cfg, fallback is not None) for v in by_variant]
    ranked = [c for members, _ in within for c in members]
    seed_reason = within[0][1]
    stats = variant_stats(candidates, metric)
    listing = "; ".join(f"{v.name} {stats[v.name].text()}" for v in by_variant)
    reason = (
        f"{ranked[0].name}: best seed of the best variant. Variants by seed mean: "
        f"{variant_reason} [{metric}: {listing}]. Seeds of {by_variant[0].name}: {seed_reason}"
    )
    if fallback is not None:
        reason += f"; fallback: {fallback}"
    return ranked, reason, stats


def averaged_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """An averaged model's metrics under the names selection ranks by: ``ema_val_loss`` is
    also ``val_loss`` (a plain name already present wins)."""
    out = dict(metrics)
    for key, value in metrics.items():
        if key.startswith("ema_"):
            out.setdefault(key.removeprefix("ema_"), value)
    return out


def load_candidate(
    run_dir: str | Path, name: str, variant: str | None = None, averaged: bool = False
) -> Candidate | None:
    """Candidate from a run folder's ``summary.json`` (None for a skipped or unfinished run).

    ``averaged``: the run's averaged model instead (None when the run has none); it is named
    ``<name>:averaged``, belongs to ``<variant>:averaged`` and ships its own checkpoint.
    """
    path = RunPaths(run_dir).summary
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if summary.get("skipped") or summary.get("status") != "finished":
        return None
    metrics, checkpoint = summary["metrics"], None
    if averaged:
        info = summary.get("averaged")
        if not info:
            return None
        metrics = averaged_metrics(info.get("metrics", {}))
        checkpoint = (Path(run_dir) / info["checkpoint"]).as_posix()
        name = f"{name}{AVERAGED}"
        variant = None if variant is None else f"{variant}{AVERAGED}"
    params = summary.get("params", {})
    return Candidate(
        name=name,
        run_dir=Path(run_dir).as_posix(),
        metrics=metrics,
        variant=variant,
        checkpoint=checkpoint,
        params={
            "seed": summary.get("seed"),
            "learning_rate": params.get("optimizer", {}).get("learning_rate"),
            "hidden_dim": params.get("model", {}).get("hidden_dim"),
            "pooling": params.get("model", {}).get("pooling_type"),
            "pooled_skip": params.get("model", {}).get("pooled_skip", False),
        },
        tuning_groups=int(summary.get("tuning_groups", 0)),
    )


def run_candidates(run_dir: str | Path, name: str, variant: str | None = None) -> list[Candidate]:
    """A finished run's candidates: the run itself and, when it has one, its averaged model."""
    return [
        c
        for averaged in (False, True)
        if (c := load_candidate(run_dir, name, variant, averaged)) is not None
    ]


def winner_candidate(winner_dir: str | Path, name: str) -> Candidate:
    """The candidate an earlier selection copied to ``winner_dir`` (named ``name``; for an
    averaged winner, ``model.ckpt`` there already holds the averaged weights)."""
    averaged = name.endswith(AVERAGED)
    cand = load_candidate(winner_dir, name.removesuffix(AVERAGED), averaged=averaged)
    if cand is None:
        raise FileNotFoundError(f"{Path(winner_dir) / 'summary.json'}: no finished winner")
    return replace(cand, name=name, checkpoint=ModelPaths(winner_dir).checkpoint.as_posix())


def sweep_candidates(train_root: str | Path, params: Params) -> list[Candidate]:
    """The members of the current sweep (seeds x variants in params), all required, each with
    its averaged model when it has one."""
    candidates = []
    for seed in params.sweep.seeds:
        for variant in params.sweep.variants:
            member = f"{seed}-{variant}"
            found = run_candidates(Path(train_root) / member, f"train/{member}", variant)
            if not found:
                raise FileNotFoundError(
                    f"{Path(train_root) / member}/summary.json: sweep member "
                    "has not finished (run `dvc repro`)"
                )
            candidates += found
    return candidates


def leaderboard_csv(ranked: list[Candidate], metric: str, stats_metric: str | None = None) -> str:
    """One row per candidate in rank order, with its variant's seed mean ± sd and seed count
    of ``stats_metric`` (default ``metric``: the metric that ranked)."""
    stats = variant_stats(ranked, stats_metric or metric)
    columns = [
        "rank",
        "name",
        metric,
        "variant",
        "variant_mean",
        "variant_sd",
        "n_seeds",
        *[m for m in HEADLINE if m != metric],
        "seed",
        "learning_rate",
        "hidden_dim",
        "pooling",
        "pooled_skip",
        "run_dir",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for i, cand in enumerate(ranked, 1):
        row: dict[str, Any] = {"rank": i, "name": cand.name, "run_dir": cand.run_dir}
        row.update({m: _short_float(cand.value(m)) for m in HEADLINE})
        row[metric] = _short_float(cand.value(metric))
        group = stats[cand.group]
        row.update(
            variant=group.variant,
            variant_mean=_short_float(group.mean),
            variant_sd=_short_float(group.sd),
            n_seeds=group.n_seeds,
        )
        row.update(cand.params)
        writer.writerow({k: row.get(k) for k in columns})
    return buffer.getvalue()


def _table(ranked: list[Candidate]) -> list[dict[str, Any]]:
    return [
        {
            "rank": i,
            "name": c.name,
            "variant": c.group,
            "run_dir": c.run_dir,
            "checkpoint": winner_sources(c.run_dir, c.checkpoint)[MODEL_CHECKPOINT].as_posix(),
            "metrics": c.metrics,
            "params": c.params,
        }
        for i, c in enumerate(ranked, 1)
    ]


WINNER_DIR = "winner"


def winner_sources(run_dir: str | Path, checkpoint: str | Path | None = None) -> dict[str, Path]:
    """Files that make up a selected model: an ordinary run folder, or a ``winner/`` folder
    that an earlier selection wrote (so the next stage reads only what it declares).
    ``checkpoint`` overrides the weights (a run's averaged model: :attr:`Candidate.checkpoint`)."""
    run_dir = Path(run_dir)
    if checkpoint is not None:
        ckpt = Path(checkpoint)
    else:
        ckpt = ModelPaths(run_dir).checkpoint
        if not ckpt.exists():
            ckpt = RunPaths(run_dir).checkpoints / "best.ckpt"
    return {
        MODEL_CHECKPOINT: ckpt,
        SUMMARY: RunPaths(run_dir).summary,
        FEATURE_METADATA: RunPaths(run_dir).feature_metadata,
    }


def copy_winner(
    run_dir: str | Path, dest: str | Path, checkpoint: str | Path | None = None
) -> Path:
    """Copy the selected model's checkpoint (``checkpoint``, default: the run's best), summary
    and schema into ``dest`` (replaced)."""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name, src in winner_sources(run_dir, checkpoint).items():
        shutil.copyfile(src, dest / name)
    return dest


def write_selection(
    *,
    ranked: list[Candidate],
    reason: str,
    cfg: SelectionConfig,
    out_dir: str | Path,
    metric_prefix: str,
    extra: dict[str, Any] | None = None,
    extra_metrics: dict[str, float | None] | None = None,
    stats_metric: str | None = None,
) -> dict[str, Any]:
    """selection.json (winner, ranked table), leaderboard.csv (variant columns over
    ``stats_metric``, default the primary metric), metrics.json (plus ``extra_metrics``), and
    the winner's files in ``winner/`` (model.ckpt, summary.json, feature_metadata.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    win = ranked[0]
    selection = {
        "primary_metric": cfg.primary_metric,
        "direction": DIRECTIONS[cfg.primary_metric],
        "tie_break": list(TIE_BREAK),
        "shortlist": cfg.shortlist.model_dump(),
        "winner": win.name,
        "variant": win.group,
        "run_dir": win.run_dir,
        "checkpoint": f"{(out_dir / WINNER_DIR).as_posix()}/{MODEL_CHECKPOINT}",
        "reason": reason,
        **(extra or {}),
        "ranked": _table(ranked),
    }
    copy_winner(win.run_dir, out_dir / WINNER_DIR, win.checkpoint)
    (out_dir / "selection.json").write_text(dump_json(selection))
    (out_dir / "leaderboard.csv").write_text(
        leaderboard_csv(ranked, cfg.primary_metric, stats_metric)
    )
    metrics = {f"{metric_prefix}{m}": win.value(m) for m in METRICS_FILE_KEYS}
    metrics.update({f"{metric_prefix}{k}": v for k, v in (extra_metrics or {}).items()})
    write_json(out_dir / METRICS, metrics)
    return selection


def selection_stage(
    *, params: Params, train_root: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage worker for ``selection``: rank the sweep's variants on their seed means and pick
    the best variant's best seed (:func:`choose_by_variant`), the model fine-tuning resumes.

    Reads ``<train_root>/<seed>-<variant>/summary.json`` of every sweep member (seeds x
    variants in ``params.sweep``) and the winner's ``checkpoints/best.ckpt`` (or its averaged
    checkpoint) and ``feature_metadata.json``. Writes into ``out_dir``: ``selection.json``
    (winner, reason, variant statistics, ranked table), ``leaderboard.csv``, ``metrics.json``
    (``sweep_*``) and ``winner/{model.ckpt,summary.json,feature_metadata.json}``.

    Args:
        params: the params (``sweep`` and ``selection`` sections).
        train_root: the folder of the sweep's run folders (``runs/train``).
        out_dir: the stage's output folder.

    Returns:
        The content of ``selection.json``.

    Raises:
        FileNotFoundError: a sweep member has not finished.
    """
    candidates = sweep_candidates(train_root, params)
    ranked, reason, stats = choose_by_variant(candidates, params.selection)
    fallback = tuning_fallback(candidates, params.selection)
    metric = ranking_metric(params.selection, fallback is not None)
    best = stats[ranked[0].group]
    print(f"selection: {reason}")
    return write_selection(
        ranked=ranked,
        reason=reason,
        cfg=params.selection,
        out_dir=out_dir,
        metric_prefix="sweep_",
        extra={
            "fallback": fallback,
            "ranking_metric": metric,
            "variants": [
                {
                    "variant": v.variant,
                    "mean": v.mean,
                    "sd": v.sd,
                    "n_seeds": v.n_seeds,
                    "members": list(v.members),
                }
                for v in stats.values()
            ],
        },
        extra_metrics={"variant_mean": best.mean, "variant_sd": best.sd},
        stats_metric=metric,
    )
