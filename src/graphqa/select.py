"""Rank finished training runs and pick the one the rest of the pipeline uses.

Ranking is by ``selection.primary_metric`` in its own direction. Ties (equal primary values)
are broken by lower ``val_loss``, then by run name, so the choice is always deterministic.
Runs whose primary metric is missing or NaN rank last. The optional shortlist mode ("option B"
in the design notes) takes the top ``k`` runs by a loss and then picks among them by a ranking
metric, so a model that ranks decoys well but is badly calibrated cannot win outright.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphqa.config import Params, SelectionConfig
from graphqa.contract import dump_json, write_json

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
}
TIE_BREAK = ("val_loss", "name")
HEADLINE = ("selection_metric", "val_loss", "val_spearman", "val_regret", "val_hit_rate")
#: What selection stages put in their DVC metrics file (few, so `dvc exp show` stays narrow).
METRICS_FILE_KEYS = ("selection_metric", "val_loss", "val_spearman")


@dataclass(frozen=True)
class Candidate:
    """A finished run as selection sees it."""

    name: str  # e.g. "train/0-base", "finetune_phase2/555"
    run_dir: str  # relative to the repo root
    metrics: dict[str, float | None]
    params: dict[str, Any] = field(default_factory=dict)  # leaderboard columns

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
    if metric not in DIRECTIONS:
        raise ValueError(f"unknown metric '{metric}'; choose from {sorted(DIRECTIONS)}")
    return sorted(candidates, key=lambda c: sort_key(c, metric))


def choose(candidates: list[Candidate], cfg: SelectionConfig) -> tuple[list[Candidate], str]:
    """Ranked candidates (winner first) and a sentence saying why the winner won."""
    if not candidates:
        raise ValueError("no finished runs to select from")
    metric = cfg.primary_metric
    if cfg.shortlist.enabled:
        by_loss = rank(candidates, cfg.shortlist.by)
        shortlist = rank(by_loss[: cfg.shortlist.k], cfg.shortlist.then)
        ranked = shortlist + by_loss[cfg.shortlist.k :]
        win = ranked[0]
        reason = (
            f"{win.name}: best {cfg.shortlist.then} ({_fmt(win.value(cfg.shortlist.then))})"
            f" among the top {cfg.shortlist.k} by {cfg.shortlist.by}"
        )
        return ranked, reason
    ranked = rank(candidates, metric)
    win = ranked[0]
    reason = (
        f"{win.name}: {'lowest' if DIRECTIONS[metric] == 'min' else 'highest'} {metric} "
        f"({_fmt(win.value(metric))})"
    )
    if len(ranked) > 1:
        runner = ranked[1]
        reason += f"; runner-up {runner.name} ({_fmt(runner.value(metric))})"
        if win.value(metric) == runner.value(metric):
            reason += f"; tie broken by {' then '.join(TIE_BREAK)}"
    return ranked, reason


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def load_candidate(run_dir: str | Path, name: str) -> Candidate | None:
    """Candidate from a run folder's ``summary.json`` (None for a skipped or unfinished run)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if summary.get("skipped") or summary.get("status") != "finished":
        return None
    params = summary.get("params", {})
    return Candidate(
        name=name,
        run_dir=Path(run_dir).as_posix(),
        metrics=summary["metrics"],
        params={
            "seed": summary.get("seed"),
            "learning_rate": params.get("optimizer", {}).get("learning_rate"),
            "hidden_dim": params.get("model", {}).get("hidden_dim"),
            "pooling": params.get("model", {}).get("pooling_type"),
        },
    )


def sweep_candidates(train_root: str | Path, params: Params) -> list[Candidate]:
    """The members of the current sweep (seeds x variants in params), all required."""
    candidates = []
    for seed in params.sweep.seeds:
        for variant in params.sweep.variants:
            member = f"{seed}-{variant}"
            cand = load_candidate(Path(train_root) / member, f"train/{member}")
            if cand is None:
                raise FileNotFoundError(
                    f"{Path(train_root) / member}/summary.json: sweep member "
                    "has not finished (run `dvc repro`)"
                )
            candidates.append(cand)
    return candidates


def leaderboard_csv(ranked: list[Candidate], metric: str) -> str:
    columns = [
        "rank",
        "name",
        metric,
        *[m for m in HEADLINE if m != metric],
        "seed",
        "learning_rate",
        "hidden_dim",
        "pooling",
        "run_dir",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for i, cand in enumerate(ranked, 1):
        row: dict[str, Any] = {"rank": i, "name": cand.name, "run_dir": cand.run_dir}
        row.update({m: _fmt(cand.value(m)) for m in HEADLINE})
        row[metric] = _fmt(cand.value(metric))
        row.update(cand.params)
        writer.writerow({k: row.get(k) for k in columns})
    return buffer.getvalue()


def _table(ranked: list[Candidate]) -> list[dict[str, Any]]:
    return [
        {"rank": i, "name": c.name, "run_dir": c.run_dir, "metrics": c.metrics, "params": c.params}
        for i, c in enumerate(ranked, 1)
    ]


def write_selection(
    *,
    ranked: list[Candidate],
    reason: str,
    cfg: SelectionConfig,
    out_dir: str | Path,
    metric_prefix: str,
) -> dict[str, Any]:
    """selection.json (winner, checkpoint, ranked table), leaderboard.csv, metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    win = ranked[0]
    selection = {
        "primary_metric": cfg.primary_metric,
        "direction": DIRECTIONS[cfg.primary_metric],
        "tie_break": list(TIE_BREAK),
        "shortlist": cfg.shortlist.model_dump(),
        "winner": win.name,
        "run_dir": win.run_dir,
        "checkpoint": f"{win.run_dir}/checkpoints/best.ckpt",
        "reason": reason,
        "ranked": _table(ranked),
    }
    (out_dir / "selection.json").write_text(dump_json(selection))
    (out_dir / "leaderboard.csv").write_text(leaderboard_csv(ranked, cfg.primary_metric))
    write_json(
        out_dir / "metrics.json", {f"{metric_prefix}{m}": win.value(m) for m in METRICS_FILE_KEYS}
    )
    return selection


def select_sweep(*, params: Params, train_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Stage worker: rank the sweep members and record the winner."""
    ranked, reason = choose(sweep_candidates(train_root, params), params.selection)
    print(f"selection: {reason}")
    return write_selection(
        ranked=ranked, reason=reason, cfg=params.selection, out_dir=out_dir, metric_prefix="sweep_"
    )


def select_final(
    *,
    params: Params,
    selection_dir: str | Path,
    finetune_dirs: dict[str, Path],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker: pick the model the rest of the pipeline uses among the sweep winner and
    every fine-tuned run (skipped phases are ignored), and copy its checkpoint."""
    import shutil

    sweep = json.loads((Path(selection_dir) / "selection.json").read_text())
    winner = load_candidate(sweep["run_dir"], sweep["winner"])
    candidates = [c for c in [winner] if c is not None]
    candidates += [
        c for name, d in finetune_dirs.items() if (c := load_candidate(d, name)) is not None
    ]
    ranked, reason = choose(candidates, params.selection)
    out_dir = Path(out_dir)
    selection = write_selection(
        ranked=ranked, reason=reason, cfg=params.selection, out_dir=out_dir, metric_prefix=""
    )
    chosen = Path(selection["run_dir"])
    shutil.copyfile(chosen / "checkpoints" / "best.ckpt", out_dir / "model.ckpt")
    shutil.copyfile(chosen / "feature_metadata.json", out_dir / "feature_metadata.json")
    print(f"final selection: {reason}")
    return selection
