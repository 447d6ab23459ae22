"""Final selection: the sweep winner stays unless a fine-tune beats it beyond the noise.

A fine-tune starts from the sweep winner's weights and is scored on the same few val targets,
so a better point value is mostly noise. Each fine-tuned run (and its averaged model, when it
has one) is compared with the sweep winner *per val target* on the per-target analogue of the
ranking metric (:mod:`graphqa.maths.evidence`), and adopted only if the bootstrap interval over
targets of the difference excludes zero on the better side. Among adopted fine-tunes the usual
rule (:func:`graphqa.selection.choose`) picks one; with none adopted the sweep winner stays.
``selection.json`` records the evidence behind every verdict.

(Its own module, not :mod:`graphqa.selection`: scoring checkpoints pulls in the network code, and
the fine-tune stages, which import ``select``, must not rerun when the evidence code changes.)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphqa.config import Params
from graphqa.data import PackedSplit
from graphqa.layout import MODEL_CHECKPOINT, SchemaPaths
from graphqa.maths.evidence import (
    ANALOGUE_DIRECTION,
    ANALOGUE_LABEL,
    analogue_of,
    better,
    mean_difference,
    per_target,
)
from graphqa.maths.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    resample_targets,
)
from graphqa.scoring import split_predictions
from graphqa.selection import (
    WINNER_DIR,
    Candidate,
    choose,
    ranking_metric,
    run_candidates,
    tuning_fallback,
    winner_candidate,
    winner_sources,
    write_selection,
)

#: Variant name of the sweep winner in the final leaderboard.
SWEEP_VARIANT = "sweep_winner"


def _checkpoint(candidate: Candidate) -> Path:
    return winner_sources(candidate.run_dir, candidate.checkpoint)[MODEL_CHECKPOINT]


def finetune_evidence(
    *,
    reference: Candidate,
    finetunes: list[Candidate],
    metric: str,
    val: PackedSplit,
    params: Params,
) -> list[dict[str, Any]]:
    """One verdict per fine-tune: the mean per-target difference (fine-tune - sweep winner) of
    ``metric``'s per-target analogue on val, its bootstrap interval over val targets (fixed
    resamples, shared by every fine-tune) and whether it excludes zero on the better side."""
    analogue = analogue_of(metric)
    direction = ANALOGUE_DIRECTION[analogue]
    true, groups = val.y.double().numpy(), np.asarray(val.targets)

    def values(candidate: Candidate) -> np.ndarray:
        pred = split_predictions(_checkpoint(candidate), val)
        return per_target(pred, true, groups, analogue, params.selection)[1]

    reference_values = values(reference)
    n_targets = len(reference_values)
    resamples = resample_targets(n_targets, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    evidence = []
    for cand in finetunes:
        diff = mean_difference(values(cand), reference_values, resamples, BOOTSTRAP_LEVEL)
        verdict = better(diff, direction)
        summary = diff.to_json()
        evidence.append(
            {
                "candidate": cand.name,
                "reference": reference.name,
                "metric": metric,
                "per_target": ANALOGUE_LABEL[analogue],
                "direction": direction,
                "mean_diff": summary["estimate"],
                "ci": summary["ci"],
                "level": BOOTSTRAP_LEVEL,
                "n_targets": n_targets,
                "adopted": verdict.adopted,
                "reason": verdict.reason,
            }
        )
    return evidence


def final_selection_stage(
    *,
    params: Params,
    selection_dir: str | Path,
    finetune_dirs: dict[str, Path],
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``final_selection``: pick the model the rest of the pipeline uses,
    among the sweep winner and every fine-tuned run (skipped phases are ignored).

    Reads ``<selection_dir>/selection.json``, ``<selection_dir>/winner/{summary.json,
    model.ckpt}``, each fine-tune's ``summary.json`` and checkpoint (``checkpoints/best.ckpt``
    or the averaged one), the chosen model's ``feature_metadata.json`` (copied) and, when a
    fine-tune finished, ``<schema_dir>/packed/val.pt``. Writes into
    ``out_dir``: ``selection.json`` (winner, reason, per-fine-tune evidence, ranked table),
    ``leaderboard.csv``, ``metrics.json`` and ``winner/{model.ckpt,summary.json,
    feature_metadata.json}``.

    Args:
        params: the params (``selection`` section; ``trainer.num_threads``).
        selection_dir: stage ``selection``'s folder.
        finetune_dirs: candidate name (``finetune_phase1``, ``finetune_phase2/<seed>``) ->
            its run folder.
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``selection.json``.

    Raises:
        FileNotFoundError: the sweep winner's folder holds no finished run.
    """
    cfg = params.selection
    sweep = json.loads((Path(selection_dir) / "selection.json").read_text())
    reference = winner_candidate(Path(selection_dir) / WINNER_DIR, sweep["winner"])
    reference = replace(reference, variant=SWEEP_VARIANT)
    finetunes = [
        c for name, d in finetune_dirs.items() for c in run_candidates(d, name, name.split("/")[0])
    ]
    everyone = [reference, *finetunes]
    fallback = tuning_fallback(everyone, cfg)
    tuning_groups = min(c.tuning_groups for c in everyone)
    metric = ranking_metric(cfg, fallback is not None)
    evidence: list[dict[str, Any]] = []
    if finetunes:
        torch.set_num_threads(params.trainer.num_threads)
        val = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val"))
        evidence = finetune_evidence(
            reference=reference, finetunes=finetunes, metric=metric, val=val, params=params
        )
    adopted_names = {e["candidate"] for e in evidence if e["adopted"]}
    adopted = [c for c in finetunes if c.name in adopted_names]
    rejected = [c for c in finetunes if c.name not in adopted_names]
    if adopted:
        ranked, why = choose(adopted, cfg, tuning_groups)
        ranked += choose([reference, *rejected], cfg, tuning_groups)[0]
        win = next(e for e in evidence if e["candidate"] == ranked[0].name)
        reason = (
            f"{ranked[0].name}: beats the sweep winner {reference.name} beyond the noise "
            f"({win['reason']}); among {len(adopted)} adopted fine-tune(s): {why}"
        )
    else:
        ranked = [reference, *(choose(rejected, cfg, tuning_groups)[0] if rejected else [])]
        reason = f"{reference.name}: the sweep winner stays; " + (
            f"no fine-tune beats it beyond the noise ({len(rejected)} compared on the "
            f"{ANALOGUE_LABEL[analogue_of(metric)]} behind {metric}, "
            f"{BOOTSTRAP_LEVEL:.0%} bootstrap interval over val targets)"
            if rejected
            else "no fine-tuned run finished (skipped or disabled)"
        )
    if fallback is not None:
        reason += f"; fallback: {fallback}"
    selection = write_selection(
        ranked=ranked,
        reason=reason,
        cfg=cfg,
        out_dir=out_dir,
        metric_prefix="",
        extra={
            "fallback": fallback,
            "ranking_metric": metric,
            "reference": reference.name,
            "evidence": evidence,
        },
        stats_metric=metric,
    )
    print(f"final selection: {reason}")
    return selection
