"""Stage ``evaluate``: the shipped bundle on the test split, beside every family and a random pick.

The bundle is scored through the same code as ``graphqa predict``
(:func:`graphqa.predict.score_folder`), so what is evaluated is what users run. Every number
gets a bootstrap interval over test *targets* (the independent units), and the shipped score
is compared with each family the bundle carries (GNN, trees, blend) and with a random pick of
each target's models. With the scorer's record, every candidate family is also shown with its
in-sample val, out-of-fold and test ranking loss side by side (``candidates.csv``), so a user
sees which estimate predicted test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphqa.bundle import load_bundle
from graphqa.contract import read_json
from graphqa.data import PackedSplit
from graphqa.files import write_json
from graphqa.layout import METRICS, SchemaPaths
from graphqa.maths.calibration import ConformalInterval, coverage_by_band, reliability_rows
from graphqa.maths.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    HIT_THRESHOLDS,
    bootstrap_mean,
    bootstrap_pooled,
    expected_calibration_error,
    hits_key,
    mae,
    mse,
    pearson,
    per_target_table,
    resample_targets,
    spearman,
    target_members,
)
from graphqa.predict import score_folder
from graphqa.reference import TreesSettings, fit_trees_on_packed, random_pick_table

#: Metric-name prefix of each ranker in metrics.json: the shipped score keeps the ``test_``
#: names; each family the bundle carries and the random pick are references beside it.
RANKER_PREFIX = {
    "shipped": "test",
    "gnn": "ref_gnn",
    "trees": "ref_trees",
    "blend": "ref_blend",
    "random": "ref_random",
}


def ranker_summary(
    ranker: str,
    table: pd.DataFrame,
    resamples: np.ndarray,
    pred: np.ndarray | None = None,
    true: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    level: float = BOOTSTRAP_LEVEL,
) -> list[dict[str, Any]]:
    """Headline numbers of one ranker with percentile intervals over resampled targets:
    means over targets of ranking loss, per-target Spearman and hit counts, and (given
    per-model predictions) pooled Spearman with whole targets resampled."""
    rows = []
    per_target = ["ranking_loss", "spearman"] + [c for c in table.columns if c.startswith("hits_")]
    for column in per_target:
        values = table[column].to_numpy(float)
        low, high = bootstrap_mean(values, resamples, level)
        name = "spearman_per_target_mean" if column == "spearman" else column
        value = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        rows.append(
            {"ranker": ranker, "metric": name, "value": value, "ci_low": low, "ci_high": high}
        )
    if pred is not None and true is not None and groups is not None:
        low, high = bootstrap_pooled(spearman, pred, true, groups, resamples, level)
        rows.append(
            {
                "ranker": ranker,
                "metric": "spearman_pooled",
                "value": spearman(pred, true),
                "ci_low": low,
                "ci_high": high,
            }
        )
        for name, fn in (("mse", mse), ("mae", mae), ("pearson", pearson)):
            rows.append({"ranker": ranker, "metric": name, "value": fn(pred, true)})
    return rows


def paired_difference(
    name: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    column: str,
    resamples: np.ndarray,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, Any]:
    """Mean over targets of ``a - b`` for one per-target column, resampling targets jointly
    (negative ranking-loss difference: ``a`` picks better models than ``b``)."""
    diff = a[column].to_numpy(float) - b[column].to_numpy(float)
    low, high = bootstrap_mean(diff, resamples, level)
    return {
        "ranker": name,
        "metric": column,
        "value": float(np.nanmean(diff)),
        "ci_low": low,
        "ci_high": high,
    }


def _finite_or_none(value: Any) -> Any:
    """JSON-safe headline value: strings and ints as they are, floats rounded, NaN -> null."""
    if isinstance(value, str | int | np.integer) or value is None:
        return value if not isinstance(value, np.integer) else int(value)
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def headline_metrics(summary: pd.DataFrame) -> dict[str, Any]:
    """The metrics.json subset of the summary table (what ``dvc exp show`` lists)."""
    wanted = {
        "shipped": (
            "ranking_loss",
            "spearman_pooled",
            "spearman_per_target_mean",
            *(hits_key(t) for t in HIT_THRESHOLDS),
        ),
        "gnn": ("ranking_loss", "spearman_pooled"),
        "trees": ("ranking_loss", "spearman_pooled"),
        "blend": ("ranking_loss", "spearman_pooled"),
        "random": ("ranking_loss",),
        "shipped_minus_gnn": ("ranking_loss",),
        "shipped_minus_trees": ("ranking_loss",),
    }
    prefix = {**RANKER_PREFIX, **{k: k for k in wanted if k.startswith("shipped_minus")}}
    out: dict[str, Any] = {}
    for row in summary.to_dict("records"):
        if row["metric"] in wanted.get(row["ranker"], ()):
            key = f"{prefix[row['ranker']]}_{row['metric']}"
            out[key] = row["value"]
            out[f"{key}_ci_low"] = row["ci_low"]
            out[f"{key}_ci_high"] = row["ci_high"]
        elif row["ranker"] == "shipped" and row["metric"] in ("mse", "mae", "pearson"):
            out[f"test_{row['metric']}"] = row["value"]
    return out


def wide_per_target(tables: dict[str, pd.DataFrame], interval_coverage: np.ndarray) -> pd.DataFrame:
    """One row per target: the shipped score's columns as they are, each reference ranker's
    beside them with its name as prefix (``trees_ranking_loss``, ``random_hits_023``...), so a
    chart or ``dvc plots`` can overlay the rankers target by target; plus the shipped interval's
    coverage of the target's models."""
    gnn = tables["shipped"]
    shared = ["TARGET", "n_models", "best_dockq"]
    wide = gnn.assign(interval_coverage=interval_coverage)
    for name, table in tables.items():
        if name == "shipped":
            continue
        if not table["TARGET"].equals(gnn["TARGET"]):
            raise ValueError(f"per-target tables of shipped and {name} list different targets")
        own = table.drop(columns=shared)
        wide = pd.concat([wide, own.add_prefix(f"{name}_")], axis=1)
    return wide


#: Columns of ``candidates.csv``: the three estimates of each family's ranking loss.
CANDIDATE_COLUMNS = (
    "family",
    "shipped",
    "val_ranking_loss",
    "oof_ranking_loss",
    "test_ranking_loss",
    "test_ci_low",
    "test_ci_high",
    "oof_inside_test_ci",
    "val_inside_test_ci",
)


def candidates_table(
    candidates: dict[str, dict[str, Any]],
    tables: dict[str, pd.DataFrame],
    resamples: np.ndarray,
    shipped: str,
) -> pd.DataFrame:
    """Each candidate's in-sample val, out-of-fold and test ranking loss, side by side.

    Args:
        candidates: ``scorer.json``'s ``candidates`` (per family ``val_ranking_loss`` and
            ``oof_ranking_loss``).
        tables: per-target test tables per family (:func:`per_target_table`).
        resamples: bootstrap resamples of the test targets.
        shipped: the shipped family.

    Returns:
        One row per family present in both, columns :data:`CANDIDATE_COLUMNS`.
    """
    rows = []
    for family, facts in candidates.items():
        if family not in tables:
            continue
        losses = tables[family]["ranking_loss"].to_numpy(float)
        low, high = bootstrap_mean(losses, resamples)
        val, oof = facts.get("val_ranking_loss"), facts.get("oof_ranking_loss")
        rows.append(
            {
                "family": family,
                "shipped": family == shipped,
                "val_ranking_loss": val,
                "oof_ranking_loss": oof,
                "test_ranking_loss": float(np.nanmean(losses)),
                "test_ci_low": low,
                "test_ci_high": high,
                "oof_inside_test_ci": oof is not None and low <= oof <= high,
                "val_inside_test_ci": val is not None and low <= val <= high,
            }
        )
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))


def evaluate_stage(
    *,
    bundle_dir: str | Path,
    graph_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    schema_dir: str | Path,
    batch_size: int = 64,
    bins: int = 10,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    trees: TreesSettings | None = None,
    scorer_record: str | Path | None = None,
) -> dict[str, Any]:
    """Stage worker for ``evaluate``: score the test split with the bundle through the same
    predict code users run, so the reported numbers are those of what ships.

    Bootstrap intervals over test targets, and beside the shipped score every family the
    bundle carries (GNN, trees, blend) and the random pick. A bundle without trees (GNN only)
    gets scikit-learn reference trees fitted on ``<schema_dir>/packed/{train,val}.pt``
    instead, and no blend.

    Reads the bundle in ``bundle_dir`` (every file ``bundle.json`` lists), ``labels_csv``, the
    schema of ``graph_dir`` (its ``graph_metadata.json`` or first graph), the labelled
    ``.pt`` graphs below ``graph_dir`` and, for a GNN-only bundle,
    ``<schema_dir>/packed/{train,val}.pt``. Writes into ``out_dir``: ``metrics.json``
    (headline numbers and intervals), ``summary.csv`` (every metric of every ranker with its
    interval), ``per_target.csv`` (one row per target: the shipped score's columns, then
    ``gnn_*``, ``trees_*``, ``blend_*`` and ``random_*``), ``predictions.csv``,
    ``interval_coverage.csv`` (all models and per DockQ band), ``reliability.csv`` and, with
    ``scorer_record``, ``candidates.csv`` (each family's val, OOF and test ranking loss).

    Args:
        bundle_dir: stage ``bundle``'s folder.
        graph_dir: the folder of ``.pt`` graphs (``paths.graph_dir``).
        labels_csv: the test labels (``paths.test_labels``).
        out_dir: the stage's output folder.
        schema_dir: stage ``schema``'s folder (read only for a GNN-only bundle).
        batch_size: graphs per scoring batch (``evaluate.batch_size``).
        bins: reliability and ECE bins (``calibration.reliability_bins``).
        n_resamples: bootstrap resamples of test targets.
        seed: the bootstrap's seed.
        trees: settings of the fallback reference trees (``None``: defaults).
        scorer_record: stage ``scorer``'s ``scorer.json`` (its candidates' val and OOF
            numbers go into ``candidates.csv``); ``None``: no such table.

    Returns:
        The content of ``metrics.json``.

    Raises:
        DataContractError: the bundle is malformed, or the graphs or labels break the
            contract (schema differs from the bundle's, a label without a graph).
    """
    bundle = load_bundle(bundle_dir)
    scored = score_folder(bundle, graph_dir, labels_csv, batch_size, pooled=True)
    frame, report = scored.frame, scored.report
    reference_iters = None
    if bundle.trees is None:
        schema_paths = SchemaPaths(Path(schema_dir))
        train = PackedSplit.load(schema_paths.packed("train"))
        val = PackedSplit.load(schema_paths.packed("val"))
        reference = fit_trees_on_packed(train, val, bundle.schema, trees or TreesSettings())
        frame["pred_trees"] = reference.predict(scored.pooled)
        reference_iters = reference.n_iter

    true = frame["dockq"].to_numpy(float)
    groups = frame["TARGET"].to_numpy()
    raw, cal = frame["pred_raw"].to_numpy(float), frame["pred_calibrated"].to_numpy(float)
    preds = {
        name: frame[f"pred_{name}"].to_numpy(float)
        for name in ("gnn", "trees", "blend")
        if f"pred_{name}" in frame
    }
    tables = {"shipped": report["per_target"]}
    tables |= {name: per_target_table(pred, true, groups) for name, pred in preds.items()}
    tables["random"] = random_pick_table(true, groups)
    resamples = resample_targets(len(tables["shipped"]), n_resamples, seed)
    rows = ranker_summary("shipped", tables["shipped"], resamples, cal, true, groups)
    for name, pred in preds.items():
        rows += ranker_summary(name, tables[name], resamples, pred, true, groups)
    rows += ranker_summary("random", tables["random"], resamples)
    for ref in [*preds, "random"]:
        rows.append(
            paired_difference(
                f"shipped_minus_{ref}", tables["shipped"], tables[ref], "ranking_loss", resamples
            )
        )
    summary = pd.DataFrame(rows, columns=["ranker", "metric", "value", "ci_low", "ci_high"])

    interval = ConformalInterval.from_dict(bundle.calibration["conformal"])
    bands = coverage_by_band(cal, true, interval.half_widths(cal, groups), groups)
    covered = (true >= frame["interval_low"].to_numpy()) & (
        true <= frame["interval_high"].to_numpy()
    )
    per_target_cover = np.array([covered[rows].mean() for rows in target_members(groups)[1]])
    cover_low, cover_high = bootstrap_mean(per_target_cover, resamples)

    metrics: dict[str, Any] = {
        "shipped_family": bundle.scorer.family,
        "test_n_targets": len(tables["shipped"]),
        "test_n_models": len(frame),
        **headline_metrics(summary),
        "test_ece_raw": expected_calibration_error(raw, true, bins),
        "test_ece_calibrated": expected_calibration_error(cal, true, bins),
        "test_interval_coverage": bands[0]["coverage"],
        "test_interval_coverage_target_mean": bands[0]["coverage_target_mean"],
        "test_interval_coverage_target_mean_ci_low": cover_low,
        "test_interval_coverage_target_mean_ci_high": cover_high,
        "test_interval_width": bands[0]["mean_width"],
        "interval_guarantee": interval.guarantee(),
    }
    if reference_iters is not None:  # only the fallback reference trees are fitted here
        metrics["ref_trees_n_iter"] = reference_iters
    candidates = None
    if scorer_record is not None:
        record = read_json(scorer_record, "the scorer's record")
        candidates = candidates_table(
            record.get("candidates", {}), tables, resamples, bundle.scorer.family
        )
        metrics["candidates_oof_inside_test_ci"] = int(candidates["oof_inside_test_ci"].sum())
        metrics["candidates_val_inside_test_ci"] = int(candidates["val_inside_test_ci"].sum())
        metrics["candidates_n"] = len(candidates)
    metrics = {k: _finite_or_none(v) for k, v in metrics.items()}
    per_target = wide_per_target(tables, per_target_cover)
    reliability = reliability_rows(raw, cal, true, bins)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = {"index": False, "float_format": "%.6f"}
    frame.to_csv(out_dir / "predictions.csv", **csv)
    per_target.to_csv(out_dir / "per_target.csv", **csv)
    summary.to_csv(out_dir / "summary.csv", **csv)
    pd.DataFrame([{"split": "test", **row} for row in bands]).to_csv(
        out_dir / "interval_coverage.csv", **csv
    )
    pd.DataFrame(reliability).to_csv(out_dir / "reliability.csv", **csv)
    if candidates is not None:
        candidates.to_csv(out_dir / "candidates.csv", **csv)
    write_json(out_dir / METRICS, metrics)
    print(
        f"evaluate: {len(frame)} test graphs, {metrics['test_n_targets']} targets at "
        f"{report['graphs_per_s']} graphs/s; shipped {bundle.scorer.family}: ranking loss "
        f"{metrics['test_ranking_loss']} "
        f"[{metrics['test_ranking_loss_ci_low']}, {metrics['test_ranking_loss_ci_high']}] vs "
        f"gnn {metrics['ref_gnn_ranking_loss']}, trees {metrics['ref_trees_ranking_loss']}, "
        f"blend {metrics.get('ref_blend_ranking_loss')}, "
        f"random {metrics['ref_random_ranking_loss']}; "
        f"interval coverage {metrics['test_interval_coverage_target_mean']} "
        f"({interval.guarantee()})"
    )
    return metrics
