"""Feature Lottery Ticket (FLT): score feature groups, write masks, recommend a keep fraction.

Groups are what a graph builder emits as units: topology columns by slot namespace
(``base``, ``primary.s0``, ``pair.s0_s1`` ...), the basic residue columns as one group (kept
unless ``flt.drop_basic``), and edge columns by name family (``distance``, ``hist_*``) when
``flt.apply_to`` includes ``edge``. ``column`` mode makes every candidate column its own group.
"""

from __future__ import annotations

import math
import re
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


def permutation_scores(
    net: TopoQANet,
    schema: FeatureSchema,
    split: PackedSplit,
    groups: list[FeatureGroup],
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Increase of val MSE when a group's columns are shuffled across all nodes (or edges) of
    the split, i.e. mostly replaced by other graphs' values; mean ± std over ``repeats``."""
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
            "std": float(np.std(deltas)),
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


def recommend(
    rows: list[dict[str, Any]], loss_tolerance: float = 0.01, spearman_tolerance: float = 0.01
) -> dict[str, Any]:
    """Smallest keep fraction whose val_loss is within ``loss_tolerance`` (relative) and val
    Spearman within ``spearman_tolerance`` (absolute) of the unpruned baseline (keep 1.0)."""
    baseline = max(rows, key=lambda r: r["keep_fraction"])
    ok = [
        r
        for r in rows
        if r["val_loss"] <= baseline["val_loss"] * (1 + loss_tolerance)
        and r["val_spearman"] >= baseline["val_spearman"] - spearman_tolerance
    ]
    best = min(ok, key=lambda r: r["keep_fraction"]) if ok else baseline
    return {
        "keep_fraction": best["keep_fraction"],
        "mask": mask_filename(best["keep_fraction"]),
        "baseline_keep_fraction": baseline["keep_fraction"],
        "rule": f"smallest keep fraction with val_loss <= baseline * (1 + {loss_tolerance:g}) "
        f"and val_spearman >= baseline - {spearman_tolerance:g}",
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
    from graphqa.schema import FEATURE_METADATA
    from graphqa.train import load_module

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
    flt_dir: str | Path,
    selection_dir: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage ``flt_retrain@<f>``: the sweep winner's recipe, from scratch, on the masked
    features (same training code, ``feature_mask`` params)."""
    import json

    from graphqa.config import parse_params
    from graphqa.train import train_run

    selection = json.loads((Path(selection_dir) / "selection.json").read_text())
    recipe = json.loads((Path(selection["run_dir"]) / "summary.json").read_text())["params"]
    overrides = {
        "feature_mask.path": (Path(flt_dir) / mask_filename(keep_frac)).as_posix(),
        "feature_mask.apply_to": ["node", "topology", "edge"],
        "feature_mask.strict": True,
        **params.flt.retrain_overrides,
    }
    run_params = parse_params({**recipe, "flt": params.flt.model_dump(mode="json")}, overrides)
    return train_run(
        params=run_params,
        schema_dir=schema_dir,
        run_dir=out_dir,
        run_name=f"flt-keep{keep_label(keep_frac)}",
    )


def summarise(
    *, params: Any, flt_dir: str | Path, retrain_root: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Stage ``flt_summary``: metrics per keep fraction, deltas and the recommendation."""
    import csv
    import json

    from graphqa.contract import write_json

    cfg = params.flt
    rows = []
    for frac in sorted(cfg.keep_fracs, reverse=True):
        summary = json.loads((Path(retrain_root) / keep_label(frac) / "summary.json").read_text())
        mask = read_json(Path(flt_dir) / mask_filename(frac))
        m = summary["metrics"]
        rows.append(
            {
                "keep_fraction": frac,
                "node_features": len(mask["node_columns"]),
                "edge_features": len(mask["edge_columns"]),
                "groups_kept": len(mask["kept_groups"]),
                "selection_metric": m["selection_metric"],
                "val_loss": m["val_loss"],
                "val_spearman": m["val_spearman"],
                "val_regret": m["val_regret"],
            }
        )
    baseline = max(rows, key=lambda r: r["keep_fraction"])
    for row in rows:
        row["delta_val_loss"] = row["val_loss"] - baseline["val_loss"]
        row["delta_val_spearman"] = row["val_spearman"] - baseline["val_spearman"]
    rec = recommend(rows, cfg.loss_tolerance, cfg.spearman_tolerance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "flt_summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    write_json(out_dir / "recommendation.json", {**rec, "table": rows})
    chosen = next(r for r in rows if r["keep_fraction"] == rec["keep_fraction"])
    write_json(
        out_dir / "metrics.json",
        {
            "flt_recommended_keep": rec["keep_fraction"],
            "flt_recommended_val_loss": round(chosen["val_loss"], 6),
            "flt_recommended_val_spearman": round(chosen["val_spearman"], 6),
        },
    )
    print(f"flt: recommend keep {keep_label(rec['keep_fraction'])} ({rec['mask']})")
    return rec
