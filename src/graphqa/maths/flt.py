"""Feature Lottery Ticket (FLT) maths: feature groups, masks, verdicts and the recommendation.

The recommendation is taken on evidence, not on one seed's point estimates: every keep fraction
is retrained over ``flt.seeds`` and compared with the unpruned retrain of the same seed on the
same val targets, and a smaller fraction is adopted only if the bootstrap interval over targets
says it is not worse beyond seed 003's tolerances (:func:`fraction_verdict`).

Groups are what a graph builder emits as units: topology columns by slot namespace
(``base``, ``primary.s0``, ``pair.s0_s1`` ...), the basic residue columns as one group (kept
unless ``flt.drop_basic``), and edge columns by name family (``distance``, ``hist_*``) when
``flt.apply_to`` includes ``edge``. ``column`` mode makes every candidate column its own group.

The stages that use this: ``flt`` (:mod:`graphqa.flt`: scores groups, writes masks),
``flt_retrain`` (:mod:`graphqa.flt_retrain`) and ``flt_summary`` (:mod:`graphqa.flt_summary`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.stats import t as student_t

from graphqa.maths.evidence import mean_difference, non_inferior, relative_increase
from graphqa.maths.metrics import BOOTSTRAP_LEVEL

if TYPE_CHECKING:
    from graphqa.schema import FeatureSchema

GroupMode = Literal["slot", "column"]


_SLOT_PART = re.compile(r"^s\d+(_s\d+)*$")


@dataclass(frozen=True)
class FeatureGroup:
    """A set of feature columns FLT scores and prunes as one unit.

    Attributes:
        name: the group's name (a slot such as ``primary.s0``, ``edge.hist``, or a column).
        kind: whether the columns are node or edge columns.
        columns: the column names, in schema order.
    """

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


def _grouped(
    columns: list[str], key: Callable[[str], str], kind: Literal["node", "edge"]
) -> list[FeatureGroup]:
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


def repeat_summary(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample sd and a Student-t interval of the mean over permutation repeats, so a
    reader sees whether two groups' importances are told apart by the shuffles at all (one
    repeat: no spread can be estimated, sd and interval are null)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "sd": None, "ci95": None}
    sd = float(np.std(values, ddof=1))
    half = float(student_t.ppf((1 + level) / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


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
    """File name of the FLT mask for one keep fraction, as stages and dvc.yaml name it.

    Args:
        keep_frac: the fraction of candidate groups kept.

    Returns:
        ``flt_mask_keep_<keep_frac>.json`` (``keep_frac`` as :func:`keep_label` writes it).
    """
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
    ends (:func:`graphqa.maths.evidence.non_inferior`)."""
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
