"""Feature Lottery Ticket (FLT): score feature groups, write masks, recommend a keep fraction.

The recommendation is taken on evidence, not on one seed's point estimates: every keep fraction
is retrained over ``flt.seeds`` and compared with the unpruned retrain of the same seed on the
same val targets, and a smaller fraction is adopted only if the bootstrap interval over targets
says it is not worse beyond seed 003's tolerances (:func:`fraction_verdict`).

Groups are what a graph builder emits as units: topology columns by slot namespace
(``base``, ``primary.s0``, ``pair.s0_s1`` ...), the basic residue columns as one group (kept
unless ``flt.drop_basic``), and edge columns by name family (``distance``, ``hist_*``) when
``flt.apply_to`` includes ``edge``. ``column`` mode makes every candidate column its own group.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from graphqa.contract import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    TOPOLOGY_COLUMNS,
    DataContractError,
    read_json,
)
from graphqa.data import PackedSplit
from graphqa.evidence import mean_difference, non_inferior, relative_increase
from graphqa.metrics import BOOTSTRAP_LEVEL
from graphqa.model import TopoQANet
from graphqa.schema import FeatureSchema
from graphqa.scoring import packed_logits

GroupMode = Literal["slot", "column"]
_SLOT_PART = re.compile(r"^s\d+(_s\d+)*$")


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    kind: Literal["node", "edge"]
    columns: tuple[str, ...]


def slot_of(column: str) -> str:
    """Slot namespace of a topology column: ``base.h0.count`` -> ``base``,
    ``primary.s0.h1.x`` -> ``primary.s0``, ``pair.s0_s1.h0.x`` -> ``pair.s0_s1``."""
    parts = column.split(".")
    if len(parts) > 2 and _SLOT_PART.match(parts[1]):
        return ".".join(parts[:2])
    return parts[0]


def edge_family(column: str) -> str:
    """``hist_3`` -> ``edge.hist``; ``distance`` -> ``edge.distance``."""
    return "edge." + re.sub(r"_\d+$", "", column)


def _grouped(columns: list[str], key: Any, kind: Literal["node", "edge"]) -> list[FeatureGroup]:
    groups: dict[str, list[str]] = {}
    for col in columns:
        groups.setdefault(key(col), []).append(col)
    return [FeatureGroup(name, kind, tuple(cols)) for name, cols in groups.items()]


def build_groups(
    schema: FeatureSchema,
    group_mode: GroupMode = "slot",
    apply_to: tuple[str, ...] | list[str] = ("topology", "edge"),
    drop_basic: bool = False,
) -> list[FeatureGroup]:
    """Candidate groups (scored and prunable), in schema order."""
    by_column = group_mode == "column"
    groups: list[FeatureGroup] = []
    if drop_basic and "node" in apply_to:
        basic = schema.basic_columns
        groups += (
            _grouped(basic, lambda c: c, "node")
            if by_column
            else [FeatureGroup("basic", "node", tuple(basic))]
        )
    if "topology" in apply_to:
        groups += _grouped(schema.topology_columns, (lambda c: c) if by_column else slot_of, "node")
    if "edge" in apply_to:
        groups += _grouped(
            schema.edge_columns, (lambda c: f"edge.{c}") if by_column else edge_family, "edge"
        )
    if not groups:
        raise ValueError("flt: no candidate groups (check flt.apply_to and the schema)")
    return groups


def preflight(graph_dir: str | Path, schema: FeatureSchema) -> None:
    """FLT needs labelled columns: the sidecars must exist and agree with the schema."""
    graph_dir = Path(graph_dir)
    expected = {
        NODE_COLUMNS: schema.node_columns,
        EDGE_COLUMNS: schema.edge_columns,
        TOPOLOGY_COLUMNS: ["ID", *schema.topology_columns],
    }
    for name, columns in expected.items():
        path = graph_dir / name
        if not path.exists():
            raise DataContractError(
                path, "<file>", "labelled feature columns (FLT groups by column name)", "missing"
            )
        found = read_json(path)
        if found != columns:
            raise DataContractError(
                path,
                "<file>",
                f"the {len(columns)} column names of the resolved schema",
                f"{len(found) if isinstance(found, list) else type(found).__name__} "
                "names that differ",
            )


# --------------------------------------------------------------------------------------------
# Scoring


def _input_positions(net: TopoQANet, schema: FeatureSchema, kind: str) -> dict[str, int]:
    """Column name -> position in the model's (masked) input for node or edge features."""
    norm = net.node_norm if kind == "node" else net.edge_norm
    names = schema.node_columns if kind == "node" else schema.edge_columns
    return {names[int(i)]: pos for pos, i in enumerate(norm.index.tolist())}


def weight_magnitude_scores(
    net: TopoQANet, schema: FeatureSchema, groups: list[FeatureGroup]
) -> dict[str, dict[str, float]]:
    """Sum of |W| of the first encoder layer over a group's columns (inputs are standardised,
    so magnitudes are comparable). Columns the model never saw score 0."""
    weights = {
        "node": net.node_encoder.weight.detach().abs().sum(0),
        "edge": net.edge_encoder[0].weight.detach().abs().sum(0),
    }
    scores = {}
    for group in groups:
        pos = _input_positions(net, schema, group.kind)
        total = sum(float(weights[group.kind][pos[c]]) for c in group.columns if c in pos)
        scores[group.name] = {"score": total, "per_column": total / len(group.columns)}
    return scores


def _mse(
    net: TopoQANet,
    split: PackedSplit,
    x: torch.Tensor,
    edge_attr: torch.Tensor,
    batch_graphs: int = 256,
) -> float:
    """MSE of sigmoid(net) over a packed split with substituted feature matrices."""
    pred = torch.sigmoid(packed_logits(net, split, batch_graphs, x, edge_attr))
    return float(((pred - split.y.double()) ** 2).mean())


def repeat_summary(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample sd and a Student-t interval of the mean over permutation repeats, so a
    reader sees whether two groups' importances are told apart by the shuffles at all (one
    repeat: no spread can be estimated, sd and interval are null)."""
    from scipy.stats import t as student_t

    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci95": None}
    sd = float(np.std(values, ddof=1))
    half = float(student_t.ppf((1 + level) / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def permutation_scores(
    net: TopoQANet,
    schema: FeatureSchema,
    split: PackedSplit,
    groups: list[FeatureGroup],
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Increase of val MSE when a group's columns are shuffled across all nodes (or edges) of
    the split, i.e. mostly replaced by other graphs' values; ``score`` is the mean over
    ``repeats`` shuffles, with their sd and a 95 % interval (:func:`repeat_summary`)."""
    net = net.eval()
    base = _mse(net, split, split.x, split.edge_attr)
    col_index = {
        "node": {c: i for i, c in enumerate(schema.node_columns)},
        "edge": {c: i for i, c in enumerate(schema.edge_columns)},
    }
    scores = {}
    for g, group in enumerate(groups):
        cols = torch.tensor([col_index[group.kind][c] for c in group.columns])
        deltas = []
        for r in range(repeats):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + g * 1_009 + r)
            source = split.x if group.kind == "node" else split.edge_attr
            perm = torch.randperm(source.shape[0], generator=gen)
            shuffled = source.clone()
            shuffled[:, cols] = source[perm][:, cols]
            x, e = (shuffled, split.edge_attr) if group.kind == "node" else (split.x, shuffled)
            deltas.append(_mse(net, split, x, e) - base)
        scores[group.name] = {
            "score": float(np.mean(deltas)),
            **repeat_summary(deltas),
            "repeats": [float(d) for d in deltas],
        }
    return scores


# --------------------------------------------------------------------------------------------
# Masks and the recommendation


def rank_groups(
    groups: list[FeatureGroup], scores: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Groups, most important first (ties by name), with scores and sizes."""
    rows = [
        {"group": g.name, "kind": g.kind, "size": len(g.columns), **scores[g.name]} for g in groups
    ]
    return sorted(rows, key=lambda r: (-r["score"], r["group"]))


def make_mask(
    schema: FeatureSchema,
    groups: list[FeatureGroup],
    ranked: list[dict[str, Any]],
    keep_frac: float,
) -> dict[str, Any]:
    """Keep the top ``ceil(keep_frac * n)`` groups of each kind (at least one of each kind that
    has candidates); every non-candidate column is kept."""
    by_name = {g.name: g for g in groups}
    kept: list[dict[str, Any]] = []
    for kind in ("node", "edge"):
        of_kind = [r for r in ranked if r["kind"] == kind]
        if of_kind:
            kept += of_kind[: max(1, math.ceil(keep_frac * len(of_kind) - 1e-9))]
    candidates = {c for g in groups for c in g.columns}
    kept_cols = {c for r in kept for c in by_name[r["group"]].columns}
    return {
        "keep_fraction": keep_frac,
        "node_columns": [c for c in schema.node_columns if c not in candidates or c in kept_cols],
        "edge_columns": [c for c in schema.edge_columns if c not in candidates or c in kept_cols],
        "kept_groups": [{k: r[k] for k in ("group", "kind", "size", "score")} for r in kept],
        "dropped_groups": [r["group"] for r in ranked if r not in kept],
    }


def keep_label(keep_frac: float) -> str:
    """How a keep fraction appears in file and stage names; DVC's matrix writes 1.0 as "1.0"."""
    return str(float(keep_frac))


def mask_filename(keep_frac: float) -> str:
    return f"flt_mask_keep_{keep_label(keep_frac)}.json"


def retrain_name(keep_frac: float, seed: int) -> str:
    """Folder of one FLT retrain under ``runs/flt_retrain`` (DVC matrix ``keep x seed``)."""
    return f"{keep_label(keep_frac)}-{seed}"


def fraction_verdict(
    *,
    loss_reference: np.ndarray,
    loss_fraction: np.ndarray,
    spearman_reference: np.ndarray,
    spearman_fraction: np.ndarray,
    resamples: np.ndarray,
    loss_tolerance: float,
    spearman_tolerance: float,
    level: float = BOOTSTRAP_LEVEL,
) -> dict[str, Any]:
    """Is a pruned fraction not worse than the unpruned retrain? Inputs are per-target val
    values ``[seeds, targets]``, row ``s`` of a fraction paired with row ``s`` of the reference
    (same seed) and columns with the same val targets. The relative loss increase and the mean
    per-target Spearman difference (seed-averaged) get bootstrap intervals over targets (the
    same ``resamples`` for every seed), and seed 003's tolerance rule is applied to their worst
    ends (:func:`graphqa.evidence.non_inferior`)."""
    loss = relative_increase(loss_fraction, loss_reference, resamples, level)
    rho = mean_difference(spearman_fraction, spearman_reference, resamples, level)
    verdict = non_inferior(loss, rho, loss_tolerance, spearman_tolerance)
    return {
        "rel_loss_increase": loss,
        "target_spearman_diff": rho,
        "adopted": verdict.adopted,
        "reason": verdict.reason,
    }


def recommend(
    rows: list[dict[str, Any]], loss_tolerance: float = 0.01, spearman_tolerance: float = 0.01
) -> dict[str, Any]:
    """Smallest keep fraction whose verdict (``adopted``, :func:`fraction_verdict`) says it is
    not worse than the unpruned baseline (the largest fraction, 1.0) beyond the tolerances;
    the baseline itself when none is."""
    baseline = max(rows, key=lambda r: r["keep_fraction"])
    ok = [r for r in rows if r is baseline or r["adopted"]]
    best = min(ok, key=lambda r: r["keep_fraction"])
    return {
        "keep_fraction": best["keep_fraction"],
        "mask": mask_filename(best["keep_fraction"]),
        "baseline_keep_fraction": baseline["keep_fraction"],
        "rule": (
            f"smallest keep fraction not worse than keep {baseline['keep_fraction']:g} beyond "
            "the tolerances, paired by seed and val target: the upper bound of the 95 % "
            "bootstrap interval (resampling val targets) of the relative val loss increase "
            f"<= {loss_tolerance:g} and the lower bound of that of the per-target val "
            f"Spearman difference >= -{spearman_tolerance:g}; none: keep "
            f"{baseline['keep_fraction']:g}"
        ),
        "qualifying": sorted(r["keep_fraction"] for r in ok),
    }


# --------------------------------------------------------------------------------------------
# Stage workers


def score_groups(
    *, params: Any, schema_dir: str | Path, model_path: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage ``flt``: pre-flight, score groups of the final model on val, write the ranking
    (``flt_group_scores.json``) and one mask per keep fraction."""
    from graphqa.contract import write_json
    from graphqa.module import load_module
    from graphqa.schema import FEATURE_METADATA

    cfg = params.flt
    schema = FeatureSchema.load(Path(schema_dir) / FEATURE_METADATA)
    preflight(params.paths.graph_dir, schema)
    net = load_module(model_path).net
    groups = build_groups(schema, cfg.group_mode, cfg.apply_to, cfg.drop_basic)
    val = PackedSplit.load(Path(schema_dir) / "packed" / "val.pt")
    torch.set_num_threads(params.trainer.num_threads)
    by_method = {
        "weight_magnitude": weight_magnitude_scores(net, schema, groups),
        "permutation": permutation_scores(
            net, schema, val, groups, cfg.permutation_repeats, cfg.seed
        ),
    }
    ranked = rank_groups(groups, by_method[cfg.method])
    other = "permutation" if cfg.method == "weight_magnitude" else "weight_magnitude"
    for row in ranked:
        row[f"{other}_score"] = by_method[other][row["group"]]["score"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "method": cfg.method,
        "group_mode": cfg.group_mode,
        "apply_to": list(cfg.apply_to),
        "model": Path(model_path).as_posix(),
        "val_mse": _mse(net.eval(), val, val.x, val.edge_attr),
        "ranked": ranked,
        "ranked_by_other_method": [r["group"] for r in rank_groups(groups, by_method[other])],
    }
    write_json(out_dir / "flt_group_scores.json", result)
    for frac in cfg.keep_fracs:
        write_json(out_dir / mask_filename(frac), make_mask(schema, groups, ranked, frac))
    print("flt: groups by importance: " + ", ".join(r["group"] for r in ranked))
    return result


def retrain(
    *,
    params: Any,
    keep_frac: float,
    seed: int,
    flt_dir: str | Path,
    selection_dir: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage ``flt_retrain@<f>-<seed>``: the sweep winner's recipe, from scratch, on the masked
    features (same training code, ``feature_mask`` params) with ``dataloader.seed = seed``.
    The keep-1.0 retrain of a seed is the paired reference of every fraction of that seed."""
    import json

    from graphqa.config import parse_params
    from graphqa.select import WINNER_DIR
    from graphqa.train import train_run

    winner = Path(selection_dir) / WINNER_DIR / "summary.json"
    recipe = json.loads(winner.read_text())["params"]
    overrides = {
        "feature_mask.path": (Path(flt_dir) / mask_filename(keep_frac)).as_posix(),
        "feature_mask.apply_to": ["node", "topology", "edge"],
        "feature_mask.strict": True,
        **params.flt.retrain_overrides,
        "dataloader.seed": seed,
    }
    run_params = parse_params({**recipe, "flt": params.flt.model_dump(mode="json")}, overrides)
    return train_run(
        params=run_params,
        schema_dir=schema_dir,
        run_dir=out_dir,
        run_name=f"flt-keep{retrain_name(keep_frac, seed)}",
    )


def _retrain_summary(run_dir: Path) -> dict[str, Any]:
    import json

    path = run_dir / "summary.json"
    if not path.exists():
        raise DataContractError(
            path, "<file>", "a finished FLT retrain (run `dvc repro flt_retrain`)", "missing"
        )
    summary = json.loads(path.read_text())
    if summary.get("status") != "finished":
        raise DataContractError(path, "status", "finished", str(summary.get("status")))
    return summary


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd over seeds (missing values skipped; sd needs two values)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else None


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


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
    and Spearman (:func:`graphqa.evidence.per_target`)."""
    from graphqa.evidence import per_target, split_predictions

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
    cfg: Any,
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
        row[metric] = {"mean": _round(mean), "sd": _round(sd)}
    for s, run in enumerate(runs):  # each seed's own paired change (no interval)
        base_sum = loss[base][s].sum()
        run["rel_loss_increase"] = _round(float((loss[frac][s].sum() - base_sum) / base_sum))
        with warnings.catch_warnings():  # all targets undefined: NaN, written as null
            warnings.simplefilter("ignore", RuntimeWarning)
            run["target_spearman_diff"] = _round(float(np.nanmean(rho[frac][s] - rho[base][s])))
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
    import csv
    import io

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


def summarise(
    *,
    params: Any,
    flt_dir: str | Path,
    retrain_root: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage ``flt_summary``: every retrain (keep fraction x ``flt.seeds``) scored on val per
    target, each fraction's verdict against the unpruned retrain of the same seeds
    (:func:`fraction_verdict`), mean ± sd over seeds and the recommendation."""
    from graphqa.contract import atomic_dir, write_json
    from graphqa.metrics import BOOTSTRAP_RESAMPLES, resample_targets
    from graphqa.select import choose, load_candidate

    cfg = params.flt
    seeds = list(cfg.seeds)
    torch.set_num_threads(params.trainer.num_threads)
    val = PackedSplit.load(Path(schema_dir) / "packed" / "val.pt")
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
            tmp / "metrics.json",
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
