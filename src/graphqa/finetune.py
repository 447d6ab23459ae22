"""Fine-tuning phases: restart from a selected checkpoint's weights with lighter settings.

Phase 1 resumes the sweep winner with ``finetune.phase1.overrides``; phase 2 repeats that once
per seed in ``finetune.phase2.seeds`` from ``resume_from`` (``sweep_best`` as the design notes
describe, or ``phase1_best``). Each run starts from the winner's own params (so the network
matches the weights) with the phase overrides on top, and writes an ordinary run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from graphqa.config import Params, parse_params
from graphqa.files import write_json
from graphqa.layout import FEATURE_METADATA, METRICS, SUMMARY, ModelPaths, RunPaths
from graphqa.selection import WINNER_DIR
from graphqa.train import train_stage


def write_skipped(out_dir: str | Path, reason: str) -> dict[str, Any]:
    """A run folder with every declared output that says the phase was skipped.

    DVC stages are static, so a disabled phase still runs; final selection ignores it.
    """
    out_dir = Path(out_dir)
    plots = out_dir / "dvclive" / "plots" / "metrics"
    plots.mkdir(parents=True, exist_ok=True)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out_dir / "checkpoints" / "SKIPPED").write_text(reason + "\n")
    (plots / "selection_metric.tsv").write_text("step\tselection_metric\n")
    summary = {"skipped": True, "reason": reason}
    for name in (SUMMARY, FEATURE_METADATA):
        write_json(out_dir / name, summary)
    write_json(RunPaths(out_dir).metrics_json, {})
    write_json(RunPaths(out_dir).dvclive / METRICS, {})
    (out_dir / "metrics.csv").write_text("epoch\n")
    return summary


def resume_checkpoint(
    phase: int, resume_from: str, selection_dir: str | Path, phase1_dir: str | Path | None
) -> Path:
    """Checkpoint a phase starts from: the sweep winner's copy in ``<selection>/winner/``, or
    phase 1's best for ``phase1_best``."""
    if phase == 2 and resume_from == "phase1_best":
        if phase1_dir is None:
            raise ValueError("finetune.phase2.resume_from is phase1_best: give --phase1-dir")
        ckpt = RunPaths(Path(phase1_dir)).checkpoints / "best.ckpt"
        if not ckpt.exists():
            raise FileNotFoundError(
                f"{ckpt}: finetune.phase2.resume_from is phase1_best but "
                "phase 1 produced no checkpoint"
            )
        return ckpt
    return ModelPaths(Path(selection_dir) / WINNER_DIR).checkpoint


def finetune_stage(
    *,
    params: Params,
    phase: Literal[1, 2],
    seed: int | None,
    selection_dir: str | Path,
    phase1_dir: str | Path | None,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``finetune_phase1`` and ``finetune_phase2@<seed>``: train on from a
    selected checkpoint's weights with lighter settings, giving final selection candidates.

    Reads ``<selection_dir>/winner/summary.json`` (the winner's params), the start checkpoint
    (``<selection_dir>/winner/model.ckpt``, or ``<phase1_dir>/checkpoints/best.ckpt`` for
    phase 2 with ``resume_from: phase1_best``) and what :func:`graphqa.train.train_stage`
    reads from ``schema_dir``. Writes an ordinary run folder into ``out_dir``
    (:func:`graphqa.train.train_stage`); with ``finetune.enabled`` false, only placeholders
    that say the phase was skipped (:func:`write_skipped`).

    Args:
        params: the params (``finetune`` section; the rest comes from the winner).
        phase: 1 or 2.
        seed: phase 2's ``dataloader.seed`` (``None``: the winner's).
        selection_dir: stage ``selection``'s folder.
        phase1_dir: phase 1's run folder (needed for ``resume_from: phase1_best``).
        schema_dir: stage ``schema``'s folder.
        out_dir: the run folder to write.

    Returns:
        The run's ``summary.json`` content (``{"skipped": True, ...}`` when disabled).

    Raises:
        ValueError: ``phase1_best`` without ``phase1_dir``.
        FileNotFoundError: ``phase1_best`` but phase 1 left no checkpoint.
    """
    if not params.finetune.enabled:
        return write_skipped(out_dir, "finetune.enabled is false")
    winner_path = ModelPaths(Path(selection_dir) / WINNER_DIR).summary
    winner_summary = json.loads(winner_path.read_text())
    phase_cfg = params.finetune.phase1 if phase == 1 else params.finetune.phase2
    overrides: dict[str, Any] = dict(phase_cfg.overrides)
    if seed is not None:
        overrides["dataloader.seed"] = seed
    # The winner's params carry its architecture; the current finetune section governs.
    base = {**winner_summary["params"], "finetune": params.finetune.model_dump(mode="json")}
    run_params = parse_params(base, overrides, source=str(winner_path))
    start = resume_checkpoint(phase, params.finetune.phase2.resume_from, selection_dir, phase1_dir)
    print(f"finetune phase {phase}: from {start} with {overrides}", flush=True)
    name = f"phase{phase}" + (f"-seed{seed}" if seed is not None else "")
    return train_stage(
        params=run_params, schema_dir=schema_dir, run_dir=out_dir, init_from=start, run_name=name
    )
