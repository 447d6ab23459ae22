"""The shipped scorer: the GNN, gradient-boosted trees on pooled features, or a blend of both.

With a few hundred training graphs, heavy-tailed count columns and two-peaked labels, trees
on pooled graph statistics often rank decoys better than a message-passing network; with more
data the network wins. Which one a project ships is decided on evidence no candidate has seen:

1. every candidate is judged on *out-of-fold* (OOF) predictions of every pooled labelled
   target (train, val and tuning, in the ``cv`` folds): the GNN recipe's fold models (stage
   ``cv@<fold>``), the chosen tree recipe's fold models (stage ``trees``) and their blend
   ``w * gnn + (1 - w) * trees``, whose weight for a fold's targets is itself fitted on the
   other folds' OOF predictions (so the blend is never scored on what fitted it);
2. each candidate is reduced to its per-target ranking loss (top-1 DockQ lost by trusting the
   score: the product's headline number);
3. ``model.family: auto`` ships the candidate with the lowest OOF mean ranking loss; no family
   gets a default advantage. ``gnn | trees | blend`` force a family (``gnn`` is the seeds'
   behaviour); the evidence is recorded all the same. Every candidate's paired bootstrap
   interval against the shipped one (over pooled targets) says how sure the choice is.

The val numbers of the shipped models are recorded beside the OOF ones: they are in-sample
(val chose the GNN's epoch, seed and fine-tune; the trees are refitted on val), so a user
sees how optimistic they are. Calibration, intervals and thresholds are then fitted on the
*shipped* score (as a logit) on val_calib, and the bundle carries every component, so
``graphqa predict`` writes each component's score too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
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
)
from graphqa.model import TopoQANet
from graphqa.module import load_module
from graphqa.oof import read_oof
from graphqa.pooled import pooled_feature_names, pooled_split
from graphqa.schema import FeatureSchema
from graphqa.scoring import packed_logits
from graphqa.trees import MODEL_FILE as TREES_MODEL
from graphqa.trees import OOF_FILE as TREES_OOF
from graphqa.trees import SUMMARY_FILE as TREES_SUMMARY
from graphqa.trees import TreesModel, load_trees, ranking_summary

Family = Literal["gnn", "trees", "blend"]
FAMILIES: tuple[Family, ...] = ("gnn", "trees", "blend")
SCORER_FORMAT = "graphqa.scorer/1"
SCORER_FILE = "scorer.json"
#: Blend weights tried (weight of the GNN score).
BLEND_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
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
        gnn, trees = probabilities(gnn_logits, trees_pred)
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


def probabilities(gnn_logits: np.ndarray, trees_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both components as scores in [0, 1], float64: the GNN's sigmoid and the clipped trees.

    Args:
        gnn_logits: the network's logits.
        trees_pred: the trees' scores for the same graphs.

    Returns:
        ``(gnn, trees)``.
    """
    gnn = expit(np.asarray(gnn_logits, dtype=np.float64))
    return gnn, np.clip(np.asarray(trees_pred, dtype=np.float64), 0.0, 1.0)


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


def out_of_fold_blend(
    gnn: np.ndarray, trees: np.ndarray, true: np.ndarray, fold: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Blend predictions where each fold's weight was fitted on the other folds' rows only.

    Args:
        gnn: OOF GNN scores in [0, 1].
        trees: OOF tree scores for the same rows.
        true: DockQ labels.
        fold: fold per row.

    Returns:
        The blended OOF predictions and the weight of each fold (fold order).
    """
    pred = np.empty(len(true), dtype=np.float64)
    weights = []
    for k in np.unique(fold):
        held = fold == k
        w = fit_blend_weight(gnn[~held], trees[~held], true[~held])
        weights.append(w)
        pred[held] = blend(gnn[held], trees[held], w)
    return pred, weights


def _ranking_facts(pred: np.ndarray, true: np.ndarray, groups: np.ndarray, prefix: str) -> dict:
    """The four numbers ``scorer.json`` records per candidate and split (``prefix``)."""
    facts = ranking_summary(pred, true, groups)
    keys = ("ranking_loss", "spearman_per_target_mean", "spearman_pooled", "mse")
    return {f"{prefix}_{key}": rounded(facts[key]) for key in keys}


def choose_family(
    requested: str,
    oof: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The scorer to ship, from out-of-fold predictions of both components, with its evidence.

    Args:
        requested: ``model.family`` (``auto`` or a family).
        oof: pooled targets' OOF predictions: ``gnn_logits``, ``trees`` (scores in [0, 1]),
            ``true``, ``groups`` (target per row) and ``fold`` (fold per row).
        val: the shipped components on val (in-sample, recorded only): ``gnn_logits``,
            ``trees``, ``true`` and ``groups``.
        n_resamples: bootstrap resamples of the pooled targets.
        seed: the bootstrap's seed.

    Returns:
        ``scorer`` (a :class:`Scorer`; its blend weight fitted on every OOF row), ``reason``,
        ``candidates`` (per family: OOF and in-sample val ranking loss, Spearman and MSE) and
        ``evidence`` (per other family: mean per-target ranking-loss difference to the
        shipped one with its paired bootstrap interval over pooled targets).

    Raises:
        ValueError: ``requested`` is not ``auto`` or a family.
    """
    if requested not in ("auto", *FAMILIES):
        raise ValueError(f"model.family must be auto or one of {FAMILIES}, got {requested!r}")
    true = np.asarray(oof["true"], dtype=np.float64)
    groups, fold = np.asarray(oof["groups"]), np.asarray(oof["fold"])
    gnn, trees = probabilities(oof["gnn_logits"], oof["trees"])
    weight = fit_blend_weight(gnn, trees, true)
    oof_blend, fold_weights = out_of_fold_blend(gnn, trees, true, fold)
    oof_pred = {"gnn": gnn, "trees": trees, "blend": oof_blend}
    val_gnn, val_trees = probabilities(val["gnn_logits"], val["trees"])
    val_pred = {"gnn": val_gnn, "trees": val_trees, "blend": blend(val_gnn, val_trees, weight)}
    tables = {name: per_target_table(p, true, groups) for name, p in oof_pred.items()}
    losses = {name: t["ranking_loss"].to_numpy(float) for name, t in tables.items()}
    rhos = {name: t["spearman"].to_numpy(float) for name, t in tables.items()}
    candidates = {
        name: {
            **_ranking_facts(oof_pred[name], true, groups, "oof"),
            **_ranking_facts(val_pred[name], val["true"], np.asarray(val["groups"]), "val"),
        }
        for name in FAMILIES
    }
    candidates["blend"]["note"] = (
        f"OOF: each fold's weight fitted on the other folds' OOF rows (weights {fold_weights}); "
        f"shipped weight {weight:g} fitted on every OOF row"
    )
    best = min(FAMILIES, key=lambda n: (float(np.mean(losses[n])), FAMILIES.index(n)))
    family = best if requested == "auto" else requested
    resamples = resample_targets(len(losses[family]), n_resamples, seed)
    verdicts = []
    for name in FAMILIES:
        if name == family:
            continue
        diff = mean_difference(losses[name], losses[family], resamples, BOOTSTRAP_LEVEL)
        rho_diff = mean_difference(rhos[name], rhos[family], resamples, BOOTSTRAP_LEVEL)
        verdict = better(diff, "min")
        verdicts.append(
            {
                "candidate": name,
                "reference": family,
                "per_target": "out-of-fold ranking loss",
                "mean_diff": diff.to_json()["estimate"],
                "ci": diff.to_json()["ci"],
                "spearman_per_target_diff": rho_diff.to_json(),
                "level": BOOTSTRAP_LEVEL,
                "n_targets": len(losses[family]),
                "better_beyond_noise": verdict.adopted,
                "reason": verdict.reason,
            }
        )
    n_targets, n_folds = len(losses[family]), len(np.unique(fold))
    loss_text = ", ".join(f"{n} {np.mean(losses[n]):.4f}" for n in FAMILIES)
    if requested != "auto":
        reason = (
            f"model.family is {requested} (forced); out-of-fold mean ranking loss over "
            f"{n_targets} targets in {n_folds} folds: {loss_text}"
        )
    else:
        reason = (
            f"{family}: lowest out-of-fold mean ranking loss over {n_targets} pooled targets "
            f"in {n_folds} folds ({loss_text})"
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


def oof_components(
    cv_root: str | Path, fold_ids: list[int], trees_dir: str | Path
) -> dict[str, np.ndarray]:
    """The GNN's (stages ``cv@<fold>``) and the chosen trees' (stage ``trees``) out-of-fold
    predictions of the same pooled graphs, joined by graph key.

    Args:
        cv_root: the ``cv`` stages' parent folder (reads ``<fold>/oof.csv``).
        fold_ids: ``cv.fold_ids``.
        trees_dir: stage ``trees``'s folder (reads ``summary.json`` and
            ``oof_predictions.csv``).

    Returns:
        ``gnn_logits``, ``trees``, ``true``, ``groups`` and ``fold`` per pooled graph.

    Raises:
        DataContractError: the two stages did not predict the same graphs in the same folds.
    """
    trees_dir = Path(trees_dir)
    chosen = read_json(trees_dir / TREES_SUMMARY)["chosen"]
    trees_path = trees_dir / TREES_OOF
    trees = pd.read_csv(trees_path, dtype={"key": str, "target": str})
    gnn = read_oof(cv_root, fold_ids)
    joined = gnn.merge(trees, on="key", how="outer", suffixes=("", "_trees"), indicator=True)
    unmatched = int((joined["_merge"] != "both").sum())
    moved = int((joined["fold"] != joined["fold_trees"]).sum()) - unmatched
    if unmatched or moved:
        raise DataContractError(
            trees_path,
            "key",
            "the graphs and folds of the cv stages (same params.cv, same schema)",
            f"{unmatched} graphs in one but not the other, {moved} in another fold",
        )
    joined = joined.sort_values("key", kind="stable")
    return {
        "gnn_logits": joined["logit"].to_numpy(np.float64),
        "trees": joined[f"pred_{chosen}"].to_numpy(np.float64),
        "true": joined["dockq"].to_numpy(np.float64),
        "groups": joined["target"].to_numpy(str),
        "fold": joined["fold"].to_numpy(np.int64),
    }


def scorer_stage(
    *,
    family: str,
    fold_ids: list[int],
    model_dir: str | Path,
    trees_dir: str | Path,
    cv_root: str | Path,
    schema_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage worker for ``scorer``: choose the family the bundle ships (GNN, trees or blend)
    on out-of-fold evidence, and fit the blend weight.

    Reads ``<cv_root>/<fold>/oof.csv`` for every fold, ``<trees_dir>/{summary.json,model.txt,
    oof_predictions.csv}``, ``<schema_dir>/feature_metadata.json``,
    ``<schema_dir>/packed/val.pt`` and ``<model_dir>/model.ckpt`` (the in-sample val numbers).
    Writes into ``out_dir`` (atomic swap): ``scorer.json`` (the choice, the blend weight, the
    reason and the evidence) and ``metrics.json`` (family, blend weight, OOF and val ranking
    loss and pooled Spearman per family).

    Args:
        family: ``model.family``: ``auto`` (decided by the evidence) or a forced family.
        fold_ids: ``cv.fold_ids``.
        model_dir: stage ``final_model``'s folder.
        trees_dir: stage ``trees``'s folder.
        cv_root: the ``cv`` stages' parent folder.
        schema_dir: stage ``schema``'s folder.
        out_dir: the stage's output folder.

    Returns:
        The content of ``scorer.json``.

    Raises:
        ValueError: ``family`` is not ``auto`` or a known family.
        DataContractError: the trees do not match their recorded hash or the schema, or the
            OOF predictions of the two families do not cover the same graphs.
    """
    model_dir = Path(model_dir)
    schema = FeatureSchema.load(SchemaPaths(Path(schema_dir)).feature_metadata)
    trees = load_pipeline_trees(trees_dir, schema)
    val = PackedSplit.load(SchemaPaths(Path(schema_dir)).packed("val"))
    gnn_logits, trees_pred = packed_components(
        net=load_module(ModelPaths(model_dir).checkpoint).net, trees=trees, split=val, schema=schema
    )
    decision = choose_family(
        family,
        oof_components(cv_root, fold_ids, trees_dir),
        {
            "gnn_logits": gnn_logits,
            "trees": trees_pred,
            "true": val.y.double().numpy(),
            "groups": np.asarray(val.targets),
        },
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
        for split in ("oof", "val"):
            metrics[f"{split}_{name}_ranking_loss"] = facts[f"{split}_ranking_loss"]
            metrics[f"{split}_{name}_spearman_pooled"] = facts[f"{split}_spearman_pooled"]
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SCORER_FILE, record)
        write_json(tmp / METRICS, metrics)
    print(
        f"scorer: ships {scorer.family} (blend weight {scorer.blend_weight:g}): {record['reason']}"
    )
    return record
