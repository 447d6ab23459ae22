"""Target-grouped cv folds: whole targets, balanced, seeded, blind to labels below the best."""

from __future__ import annotations

import numpy as np
import pytest

from graphqa.maths.folds import balanced_target_folds, fold_roles, row_folds


def _targets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = [f"T{i:03d}" for i in range(n)]
    sizes = rng.integers(3, 40, n).tolist()
    best = np.where(rng.random(n) < 0.4, rng.uniform(0.0, 0.2, n), rng.uniform(0.6, 1.0, n))
    return names, sizes, best.tolist()


def test_every_target_lands_in_exactly_one_fold_and_every_fold_is_used() -> None:
    names, sizes, best = _targets(23)
    fold = balanced_target_folds(names, sizes, best, 5, seed=0)
    assert set(fold) == set(names) and set(fold.values()) == set(range(5))
    counts = np.bincount(list(fold.values()), minlength=5)
    assert counts.max() - counts.min() <= 1  # 23 targets: 4 or 5 per fold


def test_folds_are_balanced_by_graph_count_and_by_best_dockq() -> None:
    names, sizes, best = _targets(60, seed=3)
    fold = balanced_target_folds(names, sizes, best, 5, seed=0)
    graphs = np.zeros(5)
    hard = np.zeros(5)  # targets without an acceptable model (best DockQ < 0.23)
    for name, size, b in zip(names, sizes, best, strict=True):
        graphs[fold[name]] += size
        hard[fold[name]] += b < 0.23
    assert graphs.max() - graphs.min() <= max(sizes)
    assert hard.max() - hard.min() <= 1
    # a plain round-robin of sorted names would not balance the hard targets this way: the
    # assignment follows the best label, not the name order
    renamed = [f"Z{n}" for n in reversed(names)]
    other = balanced_target_folds(renamed, sizes, best, 5, seed=0)
    hard_other = np.bincount(
        [other[n] for n, b in zip(renamed, best, strict=True) if b < 0.23], minlength=5
    )
    assert hard_other.max() - hard_other.min() <= 1


def test_assignment_is_seeded_and_reproducible() -> None:
    names, sizes, best = _targets(30)
    a = balanced_target_folds(names, sizes, best, 5, seed=0)
    assert a == balanced_target_folds(names, sizes, best, 5, seed=0)
    assert a != balanced_target_folds(names, sizes, best, 5, seed=1)
    # input order does not matter
    order = np.random.default_rng(2).permutation(30)
    shuffled = balanced_target_folds(
        [names[i] for i in order], [sizes[i] for i in order], [best[i] for i in order], 5, seed=0
    )
    assert shuffled == a


def test_row_folds_ignore_every_label_but_each_targets_best() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"T{i}" for i in range(12)], 6)
    y = rng.random(len(groups))
    fold = row_folds(groups, y, 4, seed=0)
    for target in np.unique(groups):
        assert len(set(fold[groups == target])) == 1
    changed = y.copy()
    rows = groups == "T5"
    keep_best = changed[rows].max()
    changed[rows] = np.minimum(rng.random(rows.sum()) * keep_best, keep_best)
    changed[np.flatnonzero(rows)[0]] = keep_best
    assert np.array_equal(row_folds(groups, changed, 4, seed=0), fold)


def test_roles_are_disjoint_and_the_inner_fold_is_the_next_one() -> None:
    fold = np.array([0, 0, 1, 2, 2, 3, 4, 4, 1])
    role = fold_roles(fold, 4, 5)
    assert (role["held"] == (fold == 4)).all() and (role["inner"] == (fold == 0)).all()
    total = role["held"].astype(int) + role["inner"] + role["fit"]
    assert (total == 1).all()


def test_too_few_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="3 targets cannot fill 5 folds"):
        balanced_target_folds(["a", "b", "c"], [1, 1, 1], [0.1, 0.5, 0.9], 5, seed=0)
