"""Target-grouped cross-validation folds, balanced by size and by each target's best DockQ.

Why not plain ``GroupKFold``: real decoy sets have few targets that differ in difficulty, and
a fold that happens to hold most of the targets without a good model (best DockQ < 0.23)
scores every candidate on an easy-to-rank-wrongly mix. Folds here are stratified by each
target's best label and then balanced by graph count, as scikit-learn's
``StratifiedGroupKFold`` does for classes, but deterministic from one seed.

The assignment depends on a target's graph count and best label only, never on how its other
labels are spread (so permuting labels within a target never moves it to another fold).
"""

from __future__ import annotations

import numpy as np

from graphqa.maths.metrics import target_members

#: CAPRI quality cuts of DockQ (incorrect | acceptable | medium | high): the strata of a
#: target's best model that folds are balanced over.
CAPRI_DOCKQ_CUTS = (0.23, 0.49, 0.80)


def balanced_target_folds(
    targets: list[str], sizes: list[int], best_labels: list[float], n_folds: int, seed: int
) -> dict[str, int]:
    """Assign every target to one of ``n_folds`` folds.

    Targets are ordered by the CAPRI class of their best label (high first; a seeded shuffle
    within a class) and dealt in blocks of ``n_folds``: each block gives one target to every
    fold (so every fold gets the same mix of easy and hard targets), its largest target to the
    fold with the fewest graphs so far.

    Args:
        targets: target names (unique).
        sizes: graphs per target.
        best_labels: each target's best DockQ.
        n_folds: number of folds (at least 2, at most the number of targets).
        seed: the shuffle's seed.

    Returns:
        Target -> fold index in ``0 .. n_folds - 1``.

    Raises:
        ValueError: fewer targets than folds, duplicate targets or mismatched lengths.
    """
    if not len(targets) == len(sizes) == len(best_labels):
        raise ValueError("targets, sizes and best_labels must have the same length")
    if len(set(targets)) != len(targets):
        raise ValueError("target names must be unique")
    if n_folds < 2 or len(targets) < n_folds:
        raise ValueError(f"{len(targets)} targets cannot fill {n_folds} folds (need >= 2 each)")
    rng = np.random.default_rng(seed)
    names = np.asarray(sorted(targets))
    lookup = dict(zip(targets, zip(sizes, best_labels, strict=True), strict=True))
    size = np.asarray([lookup[t][0] for t in names], dtype=np.int64)
    best = np.asarray([lookup[t][1] for t in names], dtype=np.float64)
    stratum = np.digitize(best, CAPRI_DOCKQ_CUTS)
    shuffle = rng.permutation(len(names))
    order = np.lexsort((shuffle, -stratum))  # best class descending, seeded within a class
    load = np.zeros(n_folds, dtype=np.int64)
    fold: dict[str, int] = {}
    for start in range(0, len(order), n_folds):
        block = order[start : start + n_folds]
        block = block[np.argsort(-size[block], kind="stable")]  # largest first
        free = list(range(n_folds))
        for row in block:
            lightest = min(free, key=lambda k: (load[k], k))
            free.remove(lightest)
            fold[str(names[row])] = lightest
            load[lightest] += size[row]
    return fold


def fold_roles(fold: np.ndarray, held: int, n_folds: int) -> dict[str, np.ndarray]:
    """Row masks of one cross-validation round.

    The held fold is predicted; the next fold (``held + 1`` mod ``n_folds``) is the inner fold
    that early stopping and checkpoint choice look at; the rest is fitted on. So no prediction
    of the held fold comes from a model that saw its targets in fitting, stopping or choosing.

    Args:
        fold: fold index per row.
        held: the fold predicted.
        n_folds: number of folds.

    Returns:
        ``held``, ``inner`` and ``fit`` boolean masks (disjoint, covering every row).
    """
    fold = np.asarray(fold)
    held_mask = fold == held
    inner_mask = fold == (held + 1) % n_folds
    return {"held": held_mask, "inner": inner_mask, "fit": ~(held_mask | inner_mask)}


def row_folds(groups: np.ndarray, labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold per row from :func:`balanced_target_folds` (every row of a target in one fold).

    Args:
        groups: target per row.
        labels: DockQ per row.
        n_folds: number of folds.
        seed: the assignment's seed (``cv.seed``).

    Returns:
        Fold index per row, int64.
    """
    labels = np.asarray(labels, dtype=np.float64)
    targets, members = target_members(np.asarray(groups))
    assignment = balanced_target_folds(
        [str(t) for t in targets],
        [len(rows) for rows in members],
        [float(labels[rows].max()) for rows in members],
        n_folds,
        seed,
    )
    fold = np.empty(len(labels), dtype=np.int64)
    for target, rows in zip(targets, members, strict=True):
        fold[rows] = assignment[str(target)]
    return fold
