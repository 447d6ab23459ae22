"""The shipped scorer: the GNN, gradient-boosted trees on pooled features, or a blend of both.

With a few hundred training graphs, heavy-tailed count columns and two-peaked labels, trees
on pooled graph statistics often rank decoys better than a message-passing network; with more
data the network wins. Which one a project should ship is therefore a decision on evidence,
taken like every other decision in graphqa (:mod:`graphqa.maths.evidence`):

1. every candidate scores the packed val split: the final GNN (``gnn``), the trees of stage
   ``trees`` (``trees``) and their blend ``w * gnn + (1 - w) * trees`` (``blend``). The blend
   weight is fitted on val by mean squared error over a grid; the blend's *val evidence* uses
   out-of-fold predictions (the weight of each target's fold fitted on the other folds' targets),
   so the blend is not scored on the targets it was fitted on;
2. each candidate is reduced to its per-target ranking loss (top-1 DockQ lost by trusting the
   score: the product's headline number);
3. ``model.family: auto`` keeps the GNN (the seeds' behaviour) unless a challenger is better
   beyond the noise: the bootstrap interval over val targets of its mean per-target difference
   excludes zero on the better side. Among adopted challengers the lowest val ranking loss
   wins. ``gnn | trees | blend`` force a family; the evidence is recorded all the same.

Calibration, intervals and thresholds are then fitted on the *shipped* score (as a logit), and
the bundle carries every component, so ``graphqa predict`` writes each component's score too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import expit, logit

from graphqa.contract import DataContractError, read_json
from graphqa.data import PackedSplit
from graphqa.files import atomic_dir, write_json
from graphqa.layout import METRICS, ModelPaths, SchemaPaths
from graphqa.maths.evidence import better, mean_difference
from graphqa.maths.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    mse,
    per_target_table,
    resample_targets,
    rounded,
    spearman,
    target_members,
)
from graphqa.model import TopoQANet
from graphqa.module import load_module
from graphqa.pooled import pooled_feature_names, pooled_split
from graphqa.schema import FeatureSchema
from graphqa.scoring import packed_logits
from graphqa.trees import MODEL_FILE as TREES_MODEL
from graphqa.trees import SUMMARY_FILE as TREES_SUMMARY
from graphqa.trees import TreesModel, load_trees

Family = Literal["gnn", "trees", "blend"]
FAMILIES: tuple[Family, ...] = ("gnn", "trees", "blend")
SCORER_FORMAT = "graphqa.scorer/1"
SCORER_FILE = "scorer.json"
#: Blend weights tried (weight of the GNN score).
BLEND_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
#: Target folds of the out-of-fold blend predictions used as its val evidence.
BLEND_FOLDS = 5
#: Scores are clipped into (EPS, 1 - EPS) before taking a logit, so a tree prediction of
#: exactly 0 or 1 stays a finite logit for calibration.
EPS = 1e-6


@dataclass(frozen=True)
class Scorer:
    """Which score is shipped and how the blend mixes the components.

    Args:
        family: the shipped family (``gnn``, ``trees`` or ``blend``).
        blend_weight: weight of the GNN probability in the blend (``1 - w`` goes to the trees).
    """

    family: Family
    blend_weight: float

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not 0.0 <= self.blend_weight <= 1.0:
            raise ValueError(f"blend_weight must be in [0, 1], got {self.blend_weight}")

    def components(self, gnn_logits: np.ndarray, trees_pred: np.ndarray) -> dict[str, np.ndarray]:
        """Each family's score in [0, 1] for the same graphs."""
        gnn = expit(np.asarray(gnn_logits, dtype=np.float64))
        trees = np.clip(np.asarray(trees_pred, dtype=np.float64), 0.0, 1.0)
        return {"gnn": gnn, "trees": trees, "blend": blend(gnn, trees, self.blend_weight)}

    def shipped_logits(self, gnn_logits: np.ndarray, trees_pred: np.ndarray) -> np.ndarray:
        """The shipped score as a logit (what calibration fits). For ``gnn`` these are the
        network's own logits, untouched, so a GNN-only pipeline is unchanged bit for bit."""
        if self.family == "gnn":
            return np.asarray(gnn_logits, dtype=np.float64)
        score = self.components(gnn_logits, trees_pred)[self.family]
        return logit(np.clip(score, EPS, 1.0 - EPS))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SCORER_FORMAT, "family": self.family, "blend_weight": self.blend_weight}

    @classmethod
    def from_dict(cls, d: Any, source: str | Path = SCORER_FILE) -> Scorer:
        """Read a scorer written by :meth:`to_dict` (other keys, e.g. the evidence, are ignored).

        Args:
            d: the parsed JSON (``scorer.json``).
            source: the file it came from, for error messages.

        Returns:
            The scorer.

        Raises:
            DataContractError: ``d`` is not an object, or its ``format`` is not
                ``graphqa.scorer/1``, its ``family`` not one of :data:`FAMILIES` or its
                ``blend_weight`` not a number in [0, 1].
        """
        if not isinstance(d, dict):
            raise DataContractError(source, "<file>", "a JSON object", type(d).__name__)
        if d.get("format") != SCORER_FORMAT:
            got = repr(d["format"])[:80] if "format" in d else "missing"
            raise DataContractError(source, "format", repr(SCORER_FORMAT), got)
        family = d.get("family")
        if not isinstance(family, str) or family not in FAMILIES:
            got = repr(family)[:80] if "family" in d else "missing"
            raise DataContractError(source, "family", f"one of {', '.join(FAMILIES)}", got)
        weight = d.get("blend_weight")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not 0.0 <= weight <= 1.0  # also refuses NaN
        ):
            got = repr(weight)[:80] if "blend_weight" in d else "missing"
            expected = "a number in [0, 1] (the GNN's weight in the blend)"
            raise DataContractError(source, "blend_weight", expected, got)
        return cls(family=family, blend_weight=float(weight))


def blend(gnn: np.ndarray, trees: np.ndarray, weight: float) -> np.ndarray:
    """The blend family's score: a weighted mean of the GNN's and the trees' scores.

    Args:
        gnn: the GNN's scores in [0, 1] (probabilities, not logits).
        trees: the trees' scores for the same graphs.
        weight: the GNN's weight (``1 - weight`` goes to the trees).

    Returns:
        The blended scores, float64.
    """
    return weight * np.asarray(gnn, dtype=np.float64) + (1.0 - weight) * np.asarray(
        trees, dtype=np.float64
    )


def fit_blend_weight(gnn: np.ndarray, trees: np.ndarray, true: np.ndarray) -> float:
    """The grid weight with the lowest mean squared error (ties: the first, i.e. more trees).

    MSE rather than ranking loss: it is smooth in the weight, so a few val targets give a
    stable fit, and it is the objective both components were trained on."""
    errors = [mse(blend(gnn, trees, w), true) for w in BLEND_GRID]
    return float(BLEND_GRID[int(np.argmin(errors))])


def target_folds(groups: np.ndarray, n_folds: int = BLEND_FOLDS) -> np.ndarray:
    """Fold index per row: sorted targets dealt round-robin into ``n_folds`` folds."""
    targets, members = target_members(groups)
    fold = np.empty(len(groups), dtype=np.int64)
    for i, rows in enumerate(members):
        fold[rows] = i % min(n_folds, len(targets))
    return fold


def out_of_fold_blend(
    gnn: np.ndarray, trees: np.ndarray, true: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Blend predictions where each target's weight was fitted without that target's fold."""
    fold = target_folds(groups)
    pred = np.empty(len(true), dtype=np.float64)
    weights = []
    for k in np.unique(fold):
        held = fold == k
        w = fit_blend_weight(gnn[~held], trees[~held], true[~held]) if (~held).any() else 0.5
        weights.append(w)
        pred[held] = blend(gnn[held], trees[held], w)
    return pred, weights


def choose_family(
    requested: str,
    gnn_logits: np.ndarray,
    trees_pred: np.ndarray,
    true: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The scorer to ship, from val predictions of both components, with its evidence.

    Returns ``scorer`` (a :class:`Scorer`), ``reason`` and ``evidence``: per candidate its val
    ranking loss, pooled Spearman and MSE; per challenger the mean per-target ranking-loss
    difference to the GNN with its bootstrap interval over val targets and the verdict.
    """
    if requested not in ("auto", *FAMILIES):
        raise ValueError(f"model.family must be auto or one of {FAMILIES}, got {requested!r}")
    true = np.asarray(true, dtype=np.float64)
    groups = np.asarray(groups)
    gnn = expit(np.asarray(gnn_logits, dtype=np.float64))
    trees = np.clip(np.asarray(trees_pred, dtype=np.float64), 0.0, 1.0)
    weight = fit_blend_weight(gnn, trees, true)
    oof, fold_weights = out_of_fold_blend(gnn, trees, true, groups)
    val_pred = {"gnn": gnn, "trees": trees, "blend": oof}
    tables = {name: per_target_table(p, true, groups) for name, p in val_pred.items()}
    losses = {name: t["ranking_loss"].to_numpy(float) for name, t in tables.items()}
    rhos = {name: t["spearman"].to_numpy(float) for name, t in tables.items()}
    resamples = resample_targets(len(losses["gnn"]), n_resamples, seed)
    candidates = {
        name: {
            "val_ranking_loss": rounded(float(np.mean(losses[name]))),
            "val_spearman_per_target_mean": rounded(float(np.nanmean(rhos[name]))),
            "val_spearman_pooled": rounded(spearman(p, true)),
            "val_mse": rounded(mse(p, true)),
        }
        for name, p in val_pred.items()
    }
    candidates["blend"]["note"] = (
        f"out-of-fold over {len(fold_weights)} target folds (fold weights {fold_weights}); "
        f"shipped weight {weight:g} fitted on all val targets"
    )
    verdicts = []
    for name in ("trees", "blend"):
        diff = mean_difference(losses[name], losses["gnn"], resamples, BOOTSTRAP_LEVEL)
        rho_diff = mean_difference(rhos[name], rhos["gnn"], resamples, BOOTSTRAP_LEVEL)
        verdict = better(diff, "min")
        verdicts.append(
            {
                "candidate": name,
                "reference": "gnn",
                "per_target": "ranking loss",
                "mean_diff": diff.to_json()["estimate"],
                "ci": diff.to_json()["ci"],
                "spearman_per_target_diff": rho_diff.to_json(),
                "level": BOOTSTRAP_LEVEL,
                "n_targets": len(losses["gnn"]),
                "adopted": verdict.adopted,
                "reason": verdict.reason,
            }
        )
    adopted = [v["candidate"] for v in verdicts if v["adopted"]]
    if requested != "auto":
        family = requested
        reason = f"model.family is {requested} (forced; the val evidence is recorded)"
    elif adopted:
        family = min(adopted, key=lambda n: (float(np.mean(losses[n])), FAMILIES.index(n)))
        why = next(v for v in verdicts if v["candidate"] == family)["reason"]
        reason = f"{family}: beats the GNN on val ranking loss ({why})"
    else:
        family = "gnn"
        reason = (
            "gnn: no challenger beats it beyond the noise ("
            + "; ".join(f"{v['candidate']} {v['reason']}" for v in verdicts)
            + ")"
        )
    return {
        "scorer": Scorer(family=family, blend_weight=weight),  # type: ignore[arg-type]
        "reason": reason,
        "candidates": candidates,
        "evidence": verdicts,
    }


# --------------------------------------------------------------------------------------------
# The one place a shipped score is assembled (scorer, calibration, predict and evaluate call it)


@dataclass(frozen=True)
class ShippedScores:
    """Scores of the same graphs, in their order.

    Args:
        logits: the shipped score as a logit (what calibration fits and predict ships).
        components: each family's score in [0, 1] (``gnn``, and ``trees``/``blend`` when the
            trees are there), written beside the shipped score as ``pred_<family>``.
    """

    logits: np.ndarray
    components: dict[str, np.ndarray]


def shipped_scores(
    scorer: Scorer, gnn_logits: np.ndarray, trees_pred: np.ndarray | None
) -> ShippedScores:
    """Assemble the shipped score from its components.

    Args:
        scorer: the family choice and blend weight (stage ``scorer``'s ``scorer.json``).
        gnn_logits: the network's logits, one per graph.
        trees_pred: the trees' DockQ predictions for the same graphs; ``None`` for a GNN-only
            bundle (then the network's logits are shipped untouched).

    Returns:
        The shipped logits and every component's score.

    Raises:
        ValueError: a family other than ``gnn`` without tree predictions.
    """
    if trees_pred is None:
        if scorer.family != "gnn":
            raise ValueError(f"family {scorer.family!r} needs tree predictions")
        return ShippedScores(logits=gnn_logits, components={"gnn": expit(gnn_logits)})
    return ShippedScores(
        logits=scorer.shipped_logits(gnn_logits, trees_pred),
        components=scorer.components(gnn_logits, trees_pred),
    )


def packed_components(
    *, net: TopoQANet, trees: TreesModel, split: PackedSplit, schema: FeatureSchema
) -> tuple[np.ndarray, np.ndarray]:
    """GNN logits and tree predictions for every graph of a packed split (split order).

    Args:
        net: the final network (eval mode is set by the scoring loop).
        trees: the trees of stage ``trees``.
        split: a split packed by stage ``schema``.
        schema: the resolved schema (names the trees' pooled features).

    Returns:
        ``(gnn_logits, trees_pred)``, one value per graph each.
    """
    gnn_logits = packed_logits(net, split).numpy()
    trees_pred = trees.predict(pooled_split(split, schema))
    return gnn_logits, trees_pred


def load_pipeline_trees(trees_dir: str | Path, schema: FeatureSchema) -> TreesModel:
    """The trees of stage ``trees``, verified against their summary's hash and the schema.

    Args:
        trees_dir: stage ``trees``'s folder (reads ``summary.json`` and ``model.txt``).
        schema: the resolved schema the trees' pooled features must match.

    Returns:
        The loaded LightGBM model.
    """
    trees_dir = Path(trees_dir)
    summary = read_json(trees_dir / TREES_SUMMARY)
    names = pooled_feature_names(schema)
    return load_trees(trees_dir / TREES_MODEL, summary["model_sha256"], names)


def scorer_stage(
    *,
    family: str,
    model_dir: str | Path,
    trees_dir: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``scorer``: choose the family the bundle ships (GNN, trees or blend)
    on val evidence, and fit the blend weight.

    Reads ``<schema_dir>/feature_metadata.json``, ``<schema_dir>/packed/val.pt``,
    ``<model_dir>/model.ckpt`` and ``<trees_dir>/{summary.json,model.txt}``. Writes into
    ``out_dir`` (atomic swap): ``scorer.json`` (the choice, the blend weight, the reason and
    the evidence) and ``metrics.json`` (family, blend weight, val ranking loss and pooled
    Spearman per family).

    Args:
        family: ``model.family``: ``auto`` (decided by the evidence) or a forced family.
        model_dir: stage ``final_model``'s folder.
        trees_dir: stage ``trees``'s folder.
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``scorer.json``.

    Raises:
        ValueError: ``family`` is not ``auto`` or a known family.
        DataContractError: the trees do not match their recorded hash or the schema.
    """
    model_dir = Path(model_dir)
    schema = FeatureSchema.load(SchemaPaths(Path(schema_dir)).feature_metadata)
    trees = load_pipeline_trees(trees_dir, schema)
    val = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val"))
    gnn_logits, trees_pred = packed_components(
        net=load_module(ModelPaths(model_dir).checkpoint).net, trees=trees, split=val, schema=schema
    )
    decision = choose_family(
        family, gnn_logits, trees_pred, val.y.double().numpy(), np.asarray(val.targets)
    )
    scorer: Scorer = decision["scorer"]
    record = {
        **scorer.to_dict(),
        "requested": family,
        "reason": decision["reason"],
        "candidates": decision["candidates"],
        "evidence": decision["evidence"],
    }
    metrics: dict[str, Any] = {"scorer_family": scorer.family, "blend_weight": scorer.blend_weight}
    for name, facts in decision["candidates"].items():
        metrics[f"val_{name}_ranking_loss"] = facts["val_ranking_loss"]
        metrics[f"val_{name}_spearman_pooled"] = facts["val_spearman_pooled"]
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SCORER_FILE, record)
        write_json(tmp / METRICS, metrics)
    print(
        f"scorer: ships {scorer.family} (blend weight {scorer.blend_weight:g}): {record['reason']}"
    )
    return record
