"""Stage ``flt_summary``: every FLT retrain scored on val per target, a verdict per keep fraction.

Each fraction is compared with the unpruned retrain of the same seeds on the same val targets
(:func:`graphqa.maths.flt.fraction_verdict`); the smallest fraction not worse beyond the
tolerances is recommended (:func:`graphqa.maths.flt.recommend`), with the retrain that ships
under ``flt.adopt`` chosen by the rule that picks the sweep winner.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphqa.config import FltConfig, Params
from graphqa.contract import DataContractError, read_json
from graphqa.data import PackedSplit
from graphqa.files import atomic_dir, write_json
from graphqa.layout import METRICS, RunPaths, SchemaPaths
from graphqa.maths.evidence import per_target
from graphqa.maths.flt import fraction_verdict, keep_label, mask_filename, recommend, retrain_name
from graphqa.maths.metrics import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, resample_targets, rounded
from graphqa.scoring import split_predictions
from graphqa.selection import choose, load_candidate


def _retrain_summary(run_dir: Path) -> dict[str, Any]:
    path = RunPaths(run_dir).summary
    if not path.exists():
        raise DataContractError(
            path, "<file>", "a finished FLT retrain (run `dvc repro flt_retrain`)", "missing"
        )
    summary = read_json(path)
    if summary.get("status") != "finished":
        raise DataContractError(path, "status", "finished", str(summary.get("status")))
    return summary


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd over seeds (missing values skipped; sd needs two values)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else None


SUMMARY_COLUMNS = (
    "keep_fraction",
    "seed",
    "node_features",
    "edge_features",
    "groups_kept",
    "val_loss",
    "val_loss_sd",
    "val_spearman",
    "val_spearman_sd",
    "val_regret",
    "val_regret_sd",
    "rel_loss_increase",
    "rel_loss_ci_low",
    "rel_loss_ci_high",
    "target_spearman_diff",
    "target_spearman_diff_ci_low",
    "target_spearman_diff_ci_high",
    "verdict",
)


def _csv_rows(fractions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """flt_summary.csv: per fraction one row per seed, then a ``mean`` row with the sd over
    seeds, the intervals and the verdict (a plot of the file shows every seed and the mean)."""
    rows = []
    for f in fractions:
        shared = {k: f[k] for k in ("keep_fraction", "node_features", "edge_features")}
        shared["groups_kept"] = f["groups_kept"]
        for run in f["per_seed"]:
            rows.append(
                {
                    **shared,
                    "seed": run["seed"],
                    **{m: run[m] for m in ("val_loss", "val_spearman", "val_regret")},
                    "rel_loss_increase": run["rel_loss_increase"],
                    "target_spearman_diff": run["target_spearman_diff"],
                }
            )
        loss, rho = f["rel_loss_increase"], f["target_spearman_diff"]
        rows.append(
            {
                **shared,
                "seed": "mean",
                **{m: f[m]["mean"] for m in ("val_loss", "val_spearman", "val_regret")},
                **{f"{m}_sd": f[m]["sd"] for m in ("val_loss", "val_spearman", "val_regret")},
                "rel_loss_increase": loss["estimate"] if loss else None,
                "rel_loss_ci_low": loss["ci"][0] if loss else None,
                "rel_loss_ci_high": loss["ci"][1] if loss else None,
                "target_spearman_diff": rho["estimate"] if rho else None,
                "target_spearman_diff_ci_low": rho["ci"][0] if rho else None,
                "target_spearman_diff_ci_high": rho["ci"][1] if rho else None,
                "verdict": f["verdict"],
            }
        )
    return rows


@dataclass
class RetrainScores:
    """Per-target val values of every retrain, ``[seeds, targets]`` per keep fraction, and
    each retrain's own logged metrics."""

    loss: dict[float, np.ndarray]
    spearman: dict[float, np.ndarray]
    runs: dict[float, list[dict[str, Any]]]
    n_targets: int


def score_retrains(
    retrain_root: str | Path, fractions: list[float], seeds: list[int], val: PackedSplit
) -> RetrainScores:
    """Score each retrain's best checkpoint on val and reduce it to per-target squared error
    and Spearman (:func:`graphqa.maths.evidence.per_target`)."""
    true, groups = val.y.double().numpy(), np.asarray(val.targets)
    scores = RetrainScores({}, {}, {}, len(set(val.targets)))
    for frac in fractions:
        loss_rows, rho_rows, scores.runs[frac] = [], [], []
        for seed in seeds:
            run_dir = Path(retrain_root) / retrain_name(frac, seed)
            summary = _retrain_summary(run_dir)
            pred = split_predictions(run_dir / summary["checkpoint"], val)
            loss_rows.append(per_target(pred, true, groups, "squared_error")[1])
            rho_rows.append(per_target(pred, true, groups, "spearman")[1])
            m = summary["metrics"]
            scores.runs[frac].append(
                {
                    "seed": seed,
                    "run": retrain_name(frac, seed),
                    **{k: m.get(k) for k in ("val_loss", "val_spearman", "val_regret")},
                }
            )
        scores.loss[frac], scores.spearman[frac] = np.vstack(loss_rows), np.vstack(rho_rows)
    return scores


def fraction_row(
    scores: RetrainScores,
    frac: float,
    base: float,
    mask: dict[str, Any],
    resamples: np.ndarray,
    cfg: FltConfig,
) -> dict[str, Any]:
    """One keep fraction: sizes, mean ± sd over seeds, each seed's own paired change, and the
    verdict against the baseline fraction ``base`` with its intervals."""
    runs = scores.runs[frac]
    loss, rho = scores.loss, scores.spearman
    row: dict[str, Any] = {
        "keep_fraction": frac,
        "node_features": len(mask["node_columns"]),
        "edge_features": len(mask["edge_columns"]),
        "groups_kept": len(mask["kept_groups"]),
        "n_seeds": len(runs),
    }
    for metric in ("val_loss", "val_spearman", "val_regret"):
        mean, sd = _mean_sd([r[metric] for r in runs])
        row[metric] = {"mean": rounded(mean), "sd": rounded(sd)}
    for s, run in enumerate(runs):  # each seed's own paired change (no interval)
        base_sum = loss[base][s].sum()
        run["rel_loss_increase"] = rounded(float((loss[frac][s].sum() - base_sum) / base_sum))
        with warnings.catch_warnings():  # all targets undefined: NaN, written as null
            warnings.simplefilter("ignore", RuntimeWarning)
            run["target_spearman_diff"] = rounded(float(np.nanmean(rho[frac][s] - rho[base][s])))
    if frac == base:
        row.update(
            rel_loss_increase=None,
            target_spearman_diff=None,
            adopted=True,
            verdict="baseline",
            reason=f"the unpruned reference (keep {base:g}) of every seed",
        )
    else:
        v = fraction_verdict(
            loss_reference=loss[base],
            loss_fraction=loss[frac],
            spearman_reference=rho[base],
            spearman_fraction=rho[frac],
            resamples=resamples,
            loss_tolerance=cfg.loss_tolerance,
            spearman_tolerance=cfg.spearman_tolerance,
        )
        row.update(
            rel_loss_increase=v["rel_loss_increase"].to_json(),
            target_spearman_diff=v["target_spearman_diff"].to_json(),
            adopted=v["adopted"],
            verdict="adopted" if v["adopted"] else "rejected",
            reason=v["reason"],
        )
    row["per_seed"] = runs
    return row


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _csv_rows(rows):
        writer.writerow(
            {
                k: f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)
                for k, v in ((k, row.get(k)) for k in SUMMARY_COLUMNS)
            }
        )
    return buffer.getvalue()


def flt_summary_stage(
    *,
    params: Params,
    flt_dir: str | Path,
    retrain_root: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``flt_summary``: decide which keep fraction FLT recommends, from
    every retrain (keep fraction x ``flt.seeds``) scored on val per target.

    Each fraction gets a verdict against the unpruned retrain of the same seeds
    (:func:`fraction_verdict`) and mean ± sd over seeds. Reads ``<schema_dir>/packed/val.pt``,
    ``<retrain_root>/<keep>-<seed>/summary.json`` and the checkpoint it names, and
    ``<flt_dir>/flt_mask_keep_<keep>.json`` per fraction. Writes into ``out_dir`` (atomic
    swap): ``flt_summary.csv`` (per seed and mean rows), ``recommendation.json`` and
    ``metrics.json``.

    Args:
        params: the params (``flt`` and ``selection`` sections, ``trainer.num_threads``).
        flt_dir: stage ``flt``'s folder.
        retrain_root: the folder of the FLT retrains (``runs/flt_retrain``).
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``recommendation.json``: the recommended fraction, its mask, the
        retrain that ships under ``flt.adopt`` and every fraction's row.

    Raises:
        DataContractError: a retrain is missing or did not finish.
    """
    cfg = params.flt
    seeds = list(cfg.seeds)
    torch.set_num_threads(params.trainer.num_threads)
    val = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val"))
    fractions = sorted(cfg.keep_fracs, reverse=True)
    scores = score_retrains(retrain_root, fractions, seeds, val)
    # The same resampled targets for every fraction and every seed.
    resamples = resample_targets(scores.n_targets, BOOTSTRAP_RESAMPLES, cfg.seed)
    rows = [
        fraction_row(
            scores,
            frac,
            fractions[0],
            read_json(Path(flt_dir) / mask_filename(frac)),
            resamples,
            cfg,
        )
        for frac in fractions
    ]
    rec = recommend(rows, cfg.loss_tolerance, cfg.spearman_tolerance)
    chosen = next(r for r in rows if r["keep_fraction"] == rec["keep_fraction"])
    # The retrain that ships with flt.adopt: the recommended fraction's best seed, by the rule
    # that picks the sweep winner.
    candidates = [
        c
        for run in chosen["per_seed"]
        if (c := load_candidate(Path(retrain_root) / run["run"], run["run"])) is not None
    ]
    best_run = choose(candidates, params.selection)[0][0].name
    recommendation = {
        **rec,
        "run": best_run,
        "seeds": seeds,
        "n_val_targets": scores.n_targets,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": BOOTSTRAP_LEVEL, "seed": cfg.seed},
        "fractions": rows,
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / "flt_summary.csv").write_text(_csv_text(rows))
        write_json(tmp / "recommendation.json", recommendation)
        write_json(
            tmp / METRICS,
            {
                "flt_recommended_keep": rec["keep_fraction"],
                "flt_recommended_val_loss": chosen["val_loss"]["mean"],
                "flt_recommended_val_loss_sd": chosen["val_loss"]["sd"],
                "flt_recommended_val_spearman": chosen["val_spearman"]["mean"],
                "flt_recommended_val_spearman_sd": chosen["val_spearman"]["sd"],
            },
        )
    for row in rows[1:]:
        print(f"flt: keep {keep_label(row['keep_fraction'])}: {row['verdict']}: {row['reason']}")
    print(f"flt: recommend keep {keep_label(rec['keep_fraction'])} ({rec['mask']}, {best_run})")
    return recommendation
