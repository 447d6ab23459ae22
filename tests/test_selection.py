"""Run selection: ranking direction, missing values, tie-breaks, shortlist mode and outputs."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from graphqa.config import Params, SelectionConfig, parse_params
from graphqa.selection import (
    DIRECTIONS,
    METRICS_FILE_KEYS,
    Candidate,
    choose,
    choose_by_variant,
    leaderboard_csv,
    load_candidate,
    rank,
    run_candidates,
    selection_stage,
    sweep_candidates,
    tuning_fallback,
    variant_stats,
    winner_candidate,
    winner_sources,
    write_selection,
)

MIN_METRICS = sorted(m for m, d in DIRECTIONS.items() if d == "min")
MAX_METRICS = sorted(m for m, d in DIRECTIONS.items() if d == "max")


def cand(name: str, run_dir: str | None = None, **metrics: float | None) -> Candidate:
    return Candidate(name=name, run_dir=run_dir or f"runs/{name}", metrics=dict(metrics))


def materialise(root: Path, candidates: list[Candidate]) -> None:
    """Run folders on disk for hand-made candidates (write_selection copies the winner's)."""
    for c in candidates:
        run = root / c.run_dir
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / "best.ckpt").write_bytes(f"weights of {c.name}".encode())
        (run / "summary.json").write_text(json.dumps({"name": c.name}))
        (run / "feature_metadata.json").write_text("{}")


def names(ranked: list[Candidate]) -> list[str]:
    return [c.name for c in ranked]


def selection_cfg(primary: str = "selection_metric") -> SelectionConfig:
    return parse_params({}, {"selection.primary_metric": primary}).selection


def shortlist_cfg(then: str = "val_regret") -> SelectionConfig:
    return parse_params(
        {},
        {
            "selection.shortlist.enabled": True,
            "selection.shortlist.k": 2,
            "selection.shortlist.by": "val_loss",
            "selection.shortlist.then": then,
        },
    ).selection


def strict_json(path: Path) -> Any:
    """Parse as standard JSON (NaN/Infinity are not JSON and must not appear)."""

    def reject(token: str) -> Any:
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


# --------------------------------------------------------------------------------------------
# rank


def test_directions_cover_both_ways() -> None:
    assert MIN_METRICS and MAX_METRICS
    assert set(DIRECTIONS.values()) == {"min", "max"}


@pytest.mark.parametrize("metric", sorted(DIRECTIONS))
def test_rank_follows_metric_direction(metric: str) -> None:
    # val_loss runs against the metric (and names against both), so neither tie-break key could
    # produce the expected order by accident.
    def run(name: str, value: float, loss: float) -> Candidate:
        metrics = {"val_loss": loss, metric: value}
        return Candidate(name=name, run_dir=f"runs/{name}", metrics=metrics)

    low, mid, high = run("c-low", 0.1, 0.9), run("b-mid", 0.5, 0.5), run("a-high", 0.9, 0.1)
    ranked = rank([mid, high, low], metric)
    if DIRECTIONS[metric] == "min":
        assert names(ranked) == ["c-low", "b-mid", "a-high"]
    else:
        assert names(ranked) == ["a-high", "b-mid", "c-low"]


@pytest.mark.parametrize("metric", ["val_regret", "val_spearman"])
@pytest.mark.parametrize("bad", [None, math.nan])
def test_missing_or_nan_primary_ranks_last(metric: str, bad: float | None) -> None:
    # The broken run has the best val_loss and the first name; it must still be last.
    broken = cand("a-broken", **{metric: bad, "val_loss": 0.0})
    worst = 1.0 if DIRECTIONS[metric] == "min" else -1.0
    good = cand("b-good", **{metric: 0.3, "val_loss": 0.5})
    poor = cand("c-poor", **{metric: worst, "val_loss": 0.5})
    assert names(rank([broken, poor, good], metric)) == ["b-good", "c-poor", "a-broken"]


def test_absent_primary_key_ranks_last() -> None:
    ranked = rank([cand("a", val_loss=0.1), cand("b", val_spearman=-0.9)], "val_spearman")
    assert names(ranked) == ["b", "a"]


@pytest.mark.parametrize("metric", ["val_regret", "val_spearman"])
def test_equal_primary_breaks_tie_by_lower_val_loss(metric: str) -> None:
    first_by_name = cand("a", **{metric: 0.4, "val_loss": 0.8})
    lower_loss = cand("z", **{metric: 0.4, "val_loss": 0.2})
    assert names(rank([first_by_name, lower_loss], metric)) == ["z", "a"]


def test_missing_val_loss_loses_the_tie_break() -> None:
    no_loss = cand("a", val_spearman=0.4)
    with_loss = cand("b", val_spearman=0.4, val_loss=5.0)
    assert names(rank([no_loss, with_loss], "val_spearman")) == ["b", "a"]


def test_equal_primary_and_val_loss_breaks_tie_by_name() -> None:
    runs = [
        cand(n, val_regret=0.2, val_loss=0.3)
        for n in ("train/2-base", "train/0-base", "train/1-base")
    ]
    assert names(rank(runs, "val_regret")) == ["train/0-base", "train/1-base", "train/2-base"]
    assert names(rank(list(reversed(runs)), "val_regret")) == names(rank(runs, "val_regret"))


def test_unknown_metric_raises_value_error() -> None:
    with pytest.raises(ValueError, match="val_accuracy"):
        rank([cand("a", val_loss=0.1)], "val_accuracy")


def test_rank_does_not_mutate_input() -> None:
    runs = [cand("b", val_loss=0.2), cand("a", val_loss=0.1)]
    rank(runs, "val_loss")
    assert names(runs) == ["b", "a"]


# --------------------------------------------------------------------------------------------
# choose


def test_choose_ranks_by_primary_and_explains() -> None:
    runs = [cand("a", val_spearman=0.5, val_loss=0.1), cand("b", val_spearman=0.7, val_loss=0.9)]
    ranked, reason = choose(runs, selection_cfg("val_spearman"))
    assert names(ranked) == ["b", "a"]
    assert reason.startswith("b:")
    assert "highest val_spearman" in reason
    assert "runner-up a" in reason
    assert "tie" not in reason


def test_choose_min_metric_says_lowest() -> None:
    runs = [cand("a", val_regret=0.5), cand("b", val_regret=0.1)]
    ranked, reason = choose(runs, selection_cfg("val_regret"))
    assert ranked[0].name == "b"
    assert "lowest val_regret" in reason


def test_choose_mentions_tie_break_when_winner_and_runner_up_tie() -> None:
    runs = [cand("a", val_regret=0.2, val_loss=0.9), cand("b", val_regret=0.2, val_loss=0.1)]
    ranked, reason = choose(runs, selection_cfg("val_regret"))
    assert names(ranked) == ["b", "a"]
    assert "tie broken by val_loss then name" in reason


def test_choose_single_candidate() -> None:
    ranked, reason = choose([cand("only", selection_metric=0.3)], selection_cfg())
    assert names(ranked) == ["only"]
    assert reason.startswith("only:")
    assert "runner-up" not in reason


def test_choose_empty_raises() -> None:
    with pytest.raises(ValueError, match="no finished runs"):
        choose([], selection_cfg())


def test_shortlist_config_is_parsed() -> None:
    cfg = shortlist_cfg()
    assert cfg.shortlist.enabled
    assert (cfg.shortlist.k, cfg.shortlist.by, cfg.shortlist.then) == (2, "val_loss", "val_regret")


def test_shortlist_winner_is_best_then_among_top_k_by() -> None:
    # By val_loss: a < b < c < d. Top 2 = {a, b}; b has the better regret there. d and c have the
    # best regrets overall (c the best primary metric) but are outside the shortlist, so cannot
    # win, and keep val_loss order (c before d) although d's regret is better.
    runs = [
        cand("d", val_loss=0.4, val_regret=0.001, selection_metric=0.9),
        cand("c", val_loss=0.3, val_regret=0.01, selection_metric=0.0),
        cand("a", val_loss=0.1, val_regret=0.5, selection_metric=0.5),
        cand("b", val_loss=0.2, val_regret=0.3, selection_metric=0.5),
    ]
    ranked, reason = choose(runs, shortlist_cfg())
    assert ranked[0].name == "b"
    assert names(ranked) == ["b", "a", "c", "d"]
    assert reason.startswith("b:")
    assert "top 2" in reason
    assert "val_loss" in reason
    assert "val_regret" in reason


def test_shortlist_then_uses_its_own_direction() -> None:
    runs = [
        cand("a", val_loss=0.1, val_spearman=0.2),
        cand("b", val_loss=0.2, val_spearman=0.6),
        cand("c", val_loss=0.3, val_spearman=0.99),
    ]
    ranked, reason = choose(runs, shortlist_cfg(then="val_spearman"))
    assert names(ranked) == ["b", "a", "c"]
    assert "val_spearman" in reason


def test_shortlist_larger_than_pool_picks_best_then_overall() -> None:
    runs = [cand("a", val_loss=0.1, val_regret=0.5), cand("b", val_loss=0.2, val_regret=0.1)]
    ranked, _ = choose(runs, shortlist_cfg())
    assert names(ranked) == ["b", "a"]
    ranked, _ = choose(runs[:1], shortlist_cfg())
    assert names(ranked) == ["a"]


# --------------------------------------------------------------------------------------------
# load_candidate / sweep_candidates


def write_summary(run_dir: Path, **summary: Any) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


FINISHED_METRICS: dict[str, float | None] = {
    "selection_metric": 0.25,
    "val_loss": 0.05,
    "val_spearman": 0.6,
    "val_regret": 0.1,
    "val_hit_rate": None,
}


def finished_summary(seed: int = 3, lr: float = 0.002) -> dict[str, Any]:
    params = parse_params(
        {}, {"optimizer.learning_rate": lr, "model.hidden_dim": 24, "model.pooling_type": "max"}
    ).to_dict()
    return {"status": "finished", "seed": seed, "metrics": dict(FINISHED_METRICS), "params": params}


def test_load_candidate_finished(tmp_path: Path) -> None:
    run = write_summary(tmp_path / "train" / "3-base", **finished_summary())
    got = load_candidate(run, "train/3-base")
    assert got is not None
    assert got.name == "train/3-base"
    assert got.run_dir == run.as_posix()
    assert got.metrics == FINISHED_METRICS
    assert got.value("val_spearman") == pytest.approx(0.6)
    assert got.value("val_hit_rate") is None
    assert got.params["seed"] == 3
    assert got.params["learning_rate"] == pytest.approx(0.002)
    assert got.params["hidden_dim"] == 24
    assert got.params["pooling"] == "max"


def test_load_candidate_accepts_str_path(tmp_path: Path) -> None:
    run = write_summary(tmp_path / "r", **finished_summary())
    got = load_candidate(str(run), "r")
    assert got is not None and got.run_dir == run.as_posix()


def test_load_candidate_running_is_none(tmp_path: Path) -> None:
    summary = finished_summary()
    summary["status"] = "running"
    run = write_summary(tmp_path / "r", **summary)
    assert load_candidate(run, "r") is None


def test_load_candidate_skipped_is_none(tmp_path: Path) -> None:
    run = write_summary(tmp_path / "r", skipped=True, reason="finetune.enabled is false")
    assert load_candidate(run, "finetune_phase1") is None


def test_load_candidate_no_summary_is_none(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_candidate(tmp_path / "empty", "r") is None
    assert load_candidate(tmp_path / "does-not-exist", "r") is None


def sweep_params() -> Params:
    return parse_params({}, {"sweep.seeds": [0, 1], "sweep.variants": {"base": {}, "wide": {}}})


def test_sweep_candidates_loads_every_member(tmp_path: Path) -> None:
    for member in ("0-base", "0-wide", "1-base", "1-wide"):
        write_summary(tmp_path / member, **finished_summary(seed=int(member[0])))
    got = sweep_candidates(tmp_path, sweep_params())
    assert sorted(c.name for c in got) == [
        "train/0-base",
        "train/0-wide",
        "train/1-base",
        "train/1-wide",
    ]


def test_sweep_candidates_names_missing_member(tmp_path: Path) -> None:
    for member in ("0-base", "0-wide", "1-base"):
        write_summary(tmp_path / member, **finished_summary())
    (tmp_path / "1-wide").mkdir()  # folder exists, summary.json does not
    with pytest.raises(FileNotFoundError, match="1-wide") as info:
        sweep_candidates(tmp_path, sweep_params())
    assert "summary.json" in str(info.value)


def test_sweep_candidates_rejects_unfinished_member(tmp_path: Path) -> None:
    for member in ("0-base", "0-wide", "1-wide"):
        write_summary(tmp_path / member, **finished_summary())
    write_summary(tmp_path / "1-base", status="running", seed=1)
    with pytest.raises(FileNotFoundError, match="1-base"):
        sweep_candidates(tmp_path, sweep_params())


# --------------------------------------------------------------------------------------------
# leaderboard_csv / write_selection


def three_runs() -> list[Candidate]:
    return [
        Candidate(
            "train/0-base",
            "runs/train/0-base",
            {"val_spearman": 0.5, "val_loss": 0.2, "val_regret": 0.3},
            {"seed": 0, "learning_rate": 0.003, "hidden_dim": 16, "pooling": "mean"},
        ),
        Candidate(
            "train/1-base",
            "runs/train/1-base",
            {"val_spearman": 0.8, "val_loss": 0.4, "val_regret": None},
            {"seed": 1, "learning_rate": 0.003, "hidden_dim": 16, "pooling": "mean"},
        ),
        Candidate(
            "train/2-base",
            "runs/train/2-base",
            {"val_spearman": math.nan, "val_loss": 0.1, "val_regret": 0.05},
            {"seed": 2, "learning_rate": 0.001, "hidden_dim": 16, "pooling": "mean"},
        ),
    ]


@pytest.mark.parametrize("metric", ["val_spearman", "val_mae"])
def test_leaderboard_csv_header_and_rows(metric: str) -> None:
    ranked = rank(three_runs(), metric)
    text = leaderboard_csv(ranked, metric)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["rank", "name", metric]
    assert rows[0].count(metric) == 1
    assert "run_dir" in rows[0]
    assert len(rows) == 1 + len(ranked)
    body = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in body] == names(ranked)
    assert [r["rank"] for r in body] == ["1", "2", "3"]
    assert [r["run_dir"] for r in body] == [c.run_dir for c in ranked]


def test_leaderboard_csv_values_in_rank_order() -> None:
    ranked = rank(three_runs(), "val_spearman")
    body = list(csv.DictReader(io.StringIO(leaderboard_csv(ranked, "val_spearman"))))
    assert [r["name"] for r in body] == ["train/1-base", "train/0-base", "train/2-base"]
    assert float(body[0]["val_spearman"]) == pytest.approx(0.8)
    assert body[2]["val_spearman"] == "n/a"  # NaN shown as missing
    assert body[0]["val_regret"] == "n/a"
    assert body[0]["seed"] == "1"
    assert float(body[2]["learning_rate"]) == pytest.approx(0.001)


def test_write_selection_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    materialise(tmp_path, three_runs())
    cfg = selection_cfg("val_spearman")
    ranked, reason = choose(three_runs(), cfg)
    out = Path("selection")
    returned = write_selection(
        ranked=ranked, reason=reason, cfg=cfg, out_dir=out, metric_prefix="sweep_"
    )

    selection = json.loads((out / "selection.json").read_text())
    assert returned["winner"] == selection["winner"]
    assert selection["winner"] == "train/1-base"
    assert selection["run_dir"] == "runs/train/1-base"
    # The winner's files travel with the selection, so later stages read declared inputs only.
    assert selection["checkpoint"] == "selection/winner/model.ckpt"
    assert (out / "winner" / "model.ckpt").read_bytes() == b"weights of train/1-base"
    assert json.loads((out / "winner" / "summary.json").read_text()) == {"name": "train/1-base"}
    assert selection["primary_metric"] == "val_spearman"
    assert selection["direction"] == "max"
    assert selection["reason"] == reason
    table = selection["ranked"]
    assert [row["name"] for row in table] == ["train/1-base", "train/0-base", "train/2-base"]
    assert [row["rank"] for row in table] == [1, 2, 3]
    assert table[0]["run_dir"] == "runs/train/1-base"
    assert table[0]["params"]["seed"] == 1

    board = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert [r["name"] for r in board] == [row["name"] for row in table]

    metrics = strict_json(out / "metrics.json")
    assert set(metrics) == {f"sweep_{m}" for m in METRICS_FILE_KEYS}
    assert all(isinstance(v, int | float) or v is None for v in metrics.values())
    assert metrics["sweep_val_spearman"] == pytest.approx(0.8)
    assert metrics["sweep_val_loss"] == pytest.approx(0.4)
    assert metrics["sweep_selection_metric"] is None


def test_write_selection_metrics_nan_becomes_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    winner = cand("w", val_loss=0.1, val_spearman=math.nan, val_regret=0.2, val_hit_rate=1)
    materialise(tmp_path, [winner])
    cfg = selection_cfg("val_loss")
    write_selection(ranked=[winner], reason="only run", cfg=cfg, out_dir=tmp_path, metric_prefix="")
    metrics = strict_json(tmp_path / "metrics.json")
    assert set(metrics) == set(METRICS_FILE_KEYS)
    assert metrics["val_spearman"] is None
    assert metrics["val_loss"] == pytest.approx(0.1)


def test_write_selection_records_shortlist_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = shortlist_cfg()
    runs = [
        cand("a", val_loss=0.1, val_regret=0.5),
        cand("b", val_loss=0.2, val_regret=0.1),
        cand("c", val_loss=0.3, val_regret=0.0),
    ]
    materialise(tmp_path, runs)
    ranked, reason = choose(runs, cfg)
    selection = write_selection(
        ranked=ranked, reason=reason, cfg=cfg, out_dir=tmp_path, metric_prefix=""
    )
    assert selection["winner"] == "b"
    assert selection["shortlist"] == {
        "enabled": True,
        "k": 2,
        "by": "val_loss",
        "then": "val_regret",
    }
    on_disk = json.loads((tmp_path / "selection.json").read_text())
    assert [row["name"] for row in on_disk["ranked"]] == ["b", "a", "c"]


# --------------------------------------------------------------------------------------------
# Tuning metrics and the fallback to val_loss


def tuned(name: str, groups: int, spearman: float, loss: float) -> Candidate:
    """A run scored on a tuning split with ``groups`` targets of >= 2 models."""
    metrics = {"tuning_rank_spearman": spearman, "tuning_rank_regret": 1 - spearman}
    return Candidate(
        name=name,
        run_dir=f"runs/{name}",
        metrics={**metrics, "val_loss": loss},
        tuning_groups=groups,
    )


def tuning_cfg(primary: str = "tuning_rank_spearman", min_groups: int = 3) -> SelectionConfig:
    overrides = {"selection.primary_metric": primary, "selection.min_tuning_groups": min_groups}
    return parse_params({}, overrides).selection


# The tuning winner (b: highest Spearman) is not the val_loss winner (a).
def tuned_pair(groups: int) -> list[Candidate]:
    return [
        tuned("a", groups, spearman=0.2, loss=0.10),
        tuned("b", groups, spearman=0.6, loss=0.30),
    ]


def test_tuning_metric_ranks_with_enough_tuning_groups() -> None:
    ranked, reason = choose(tuned_pair(groups=3), tuning_cfg())
    assert names(ranked) == ["b", "a"]
    assert "highest tuning_rank_spearman" in reason and "fallback" not in reason
    assert tuning_fallback(tuned_pair(groups=3), tuning_cfg()) is None
    ranked, _ = choose(tuned_pair(groups=3), tuning_cfg("tuning_rank_regret"))
    assert names(ranked) == ["b", "a"]  # regret: lower is better


def test_too_few_tuning_groups_fall_back_to_val_loss_and_say_so() -> None:
    ranked, reason = choose(tuned_pair(groups=2), tuning_cfg())
    assert names(ranked) == ["a", "b"]
    assert "lowest val_loss" in reason
    assert "fallback" in reason and "2 target(s)" in reason and "min_tuning_groups = 3" in reason
    assert tuning_fallback(tuned_pair(groups=2), tuning_cfg()) in reason
    # the threshold is a parameter
    assert names(choose(tuned_pair(groups=2), tuning_cfg(min_groups=2))[0]) == ["b", "a"]


def test_no_tuning_split_falls_back_with_reason() -> None:
    runs = [cand("a", val_loss=0.1), cand("b", val_loss=0.3)]  # no tuning_groups recorded
    ranked, reason = choose(runs, tuning_cfg("tuning_hit_rate_023"))
    assert names(ranked) == ["a", "b"]
    assert "no tuning split" in reason and "lowest val_loss" in reason


def test_fallback_uses_the_smallest_recorded_count_or_the_given_one() -> None:
    runs = [tuned("a", 5, spearman=0.2, loss=0.1), tuned("b", 1, spearman=0.6, loss=0.3)]
    assert "1 target(s)" in choose(runs, tuning_cfg())[1]
    assert names(choose(runs, tuning_cfg(), tuning_groups=4)[0]) == ["b", "a"]
    assert "no tuning split" in choose(tuned_pair(groups=3), tuning_cfg(), tuning_groups=0)[1]


def test_non_tuning_metrics_never_fall_back() -> None:
    runs = [cand("a", val_loss=0.1, val_spearman=0.1), cand("b", val_loss=0.3, val_spearman=0.5)]
    ranked, reason = choose(runs, selection_cfg("val_spearman"))
    assert names(ranked) == ["b", "a"] and "fallback" not in reason


def test_shortlist_then_tuning_metric_falls_back_too() -> None:
    cfg = parse_params(
        {},
        {
            "selection.shortlist.enabled": True,
            "selection.shortlist.k": 2,
            "selection.shortlist.by": "val_loss",
            "selection.shortlist.then": "tuning_rank_spearman",
        },
    ).selection
    assert names(choose(tuned_pair(groups=3), cfg)[0]) == ["b", "a"]
    ranked, reason = choose(tuned_pair(groups=0), cfg)
    assert names(ranked) == ["a", "b"] and "no tuning split" in reason


def test_load_candidate_reads_tuning_groups(tmp_path: Path) -> None:
    run = write_summary(tmp_path / "t", **finished_summary(), tuning_groups=4)
    assert load_candidate(run, "t").tuning_groups == 4
    plain = write_summary(tmp_path / "p", **finished_summary())
    assert load_candidate(plain, "p").tuning_groups == 0


def test_min_tuning_groups_must_be_positive() -> None:
    from graphqa.config import ConfigError

    with pytest.raises(ConfigError, match=r"selection\.min_tuning_groups"):
        parse_params({}, {"selection.min_tuning_groups": 0})


# --------------------------------------------------------------------------------------------
# Variants over seeds, averaged models


def member(seed: int, variant: str, loss: float, **metrics: float) -> Candidate:
    return Candidate(
        name=f"train/{seed}-{variant}",
        run_dir=f"runs/train/{seed}-{variant}",
        metrics={"val_loss": loss, **metrics},
        params={"seed": seed},
        variant=variant,
    )


# "lucky" has the single best seed (0.05) but a worse seed mean (0.15) than "steady" (0.11).
SWEEP = [
    member(0, "steady", 0.10),
    member(1, "steady", 0.12),
    member(2, "steady", 0.11),
    member(0, "lucky", 0.05),
    member(1, "lucky", 0.20),
    member(2, "lucky", 0.20),
]


def test_variant_stats_are_seed_mean_and_sample_sd() -> None:
    stats = variant_stats(SWEEP, "val_loss")
    assert list(stats) == ["steady", "lucky"]
    assert stats["steady"].mean == pytest.approx(0.11) and stats["steady"].n_seeds == 3
    assert stats["steady"].sd == pytest.approx(0.01)  # sample sd of 0.10, 0.12, 0.11
    assert stats["lucky"].mean == pytest.approx(0.15)
    assert stats["lucky"].sd == pytest.approx(math.sqrt(((0.1**2) + 2 * 0.05**2) / 2))
    single = variant_stats([member(0, "one", 0.1), cand("loose", val_loss=0.2)], "val_loss")
    assert single["one"].sd is None and single["loose"].n_seeds == 1  # no variant: its name
    missing = variant_stats([member(0, "v", 0.1), member(1, "v", math.nan)], "val_loss")
    assert missing["v"].n_seeds == 1 and missing["v"].mean == pytest.approx(0.1)


def test_best_variant_by_seed_mean_wins_not_the_luckiest_seed() -> None:
    cfg = selection_cfg("val_loss")
    assert choose(SWEEP, cfg)[0][0].name == "train/0-lucky"  # one seed's point value
    ranked, reason, stats = choose_by_variant(SWEEP, cfg)
    assert names(ranked) == [
        "train/0-steady",  # the best variant's best seed wins
        "train/2-steady",
        "train/1-steady",
        "train/0-lucky",
        "train/1-lucky",  # equal loss: tie broken by name
        "train/2-lucky",
    ]
    assert reason.startswith("train/0-steady: best seed of the best variant")
    assert "steady 0.11 ± 0.01 over 3 seed(s)" in reason and "runner-up lucky" in reason
    assert stats["steady"].members == ("train/0-steady", "train/1-steady", "train/2-steady")


def test_variant_choice_follows_the_metric_direction_and_the_fallback() -> None:
    runs = [
        member(0, "a", 0.1, val_spearman=0.9),
        member(1, "a", 0.1, val_spearman=0.5),  # mean 0.7
        member(0, "b", 0.1, val_spearman=0.8),
        member(1, "b", 0.1, val_spearman=0.8),  # mean 0.8
    ]
    ranked, _, _ = choose_by_variant(runs, selection_cfg("val_spearman"))
    assert ranked[0].name == "train/0-b"
    tuned_runs = [replace(c, tuning_groups=1) for c in SWEEP]
    ranked, reason, _ = choose_by_variant(tuned_runs, tuning_cfg())
    assert ranked[0].name == "train/0-steady" and "fallback" in reason


def test_leaderboard_shows_each_runs_variant_mean_sd_and_seed_count() -> None:
    ranked, _, _ = choose_by_variant(SWEEP, selection_cfg("val_loss"))
    body = list(csv.DictReader(io.StringIO(leaderboard_csv(ranked, "val_loss"))))
    first, last = body[0], body[-1]
    assert (first["variant"], first["n_seeds"]) == ("steady", "3")
    assert float(first["variant_mean"]) == pytest.approx(0.11)
    assert float(first["variant_sd"]) == pytest.approx(0.01)
    assert last["variant"] == "lucky" and float(last["variant_mean"]) == pytest.approx(0.15)
    header = next(csv.reader(io.StringIO(leaderboard_csv(ranked, "val_loss"))))
    assert header[:7] == [
        "rank",
        "name",
        "val_loss",
        "variant",
        "variant_mean",
        "variant_sd",
        "n_seeds",
    ]


def write_run(
    run: Path, seed: int, loss: float, averaged_loss: float | None = None, spearman: float = 0.5
) -> None:
    """A finished run folder on disk (checkpoints hold their own names as bytes)."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(f"best of {run.name}".encode())
    metrics = {"val_loss": loss, "val_spearman": spearman, "selection_metric": loss - spearman}
    summary: dict[str, Any] = {"status": "finished", "seed": seed, "metrics": metrics}
    if averaged_loss is not None:
        (run / "checkpoints" / "averaged.ckpt").write_bytes(f"averaged of {run.name}".encode())
        summary["averaged"] = {
            "checkpoint": "checkpoints/averaged.ckpt",
            "metrics": {
                "ema_val_loss": averaged_loss,
                "ema_val_spearman": spearman,
                "ema_selection_metric": averaged_loss - spearman,
            },
        }
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "feature_metadata.json").write_text("{}")


def test_select_sweep_reports_the_winning_variants_mean_and_sd(tmp_path: Path) -> None:
    params = parse_params(
        {},
        {
            "sweep.seeds": [0, 1],
            "sweep.variants": {"base": {}, "wide": {}},
            "selection.primary_metric": "val_loss",
        },
    )
    for seed, base, wide in ((0, 0.10, 0.05), (1, 0.12, 0.30)):
        write_run(tmp_path / "train" / f"{seed}-base", seed, base)
        write_run(tmp_path / "train" / f"{seed}-wide", seed, wide)
    selection = selection_stage(
        params=params, train_root=tmp_path / "train", out_dir=tmp_path / "sel"
    )
    assert selection["winner"] == "train/0-base" and selection["variant"] == "base"
    metrics = strict_json(tmp_path / "sel" / "metrics.json")
    assert metrics["sweep_variant_mean"] == pytest.approx(0.11)
    assert metrics["sweep_variant_sd"] == pytest.approx(statistics.stdev([0.10, 0.12]))
    assert metrics["sweep_val_loss"] == pytest.approx(0.10)
    assert len(metrics) == len(METRICS_FILE_KEYS) + 2  # small: dvc exp show stays narrow
    assert [v["variant"] for v in selection["variants"]] == ["base", "wide"]
    board = list(csv.DictReader(io.StringIO((tmp_path / "sel" / "leaderboard.csv").read_text())))
    assert [r["variant"] for r in board] == ["base", "base", "wide", "wide"]


def test_an_averaged_model_is_its_own_candidate_and_ships_its_checkpoint(tmp_path: Path) -> None:
    params = parse_params({}, {"sweep.seeds": [0, 1], "selection.primary_metric": "val_loss"})
    write_run(tmp_path / "train" / "0-base", 0, 0.10, averaged_loss=0.08)
    write_run(tmp_path / "train" / "1-base", 1, 0.12, averaged_loss=0.09)
    found = sweep_candidates(tmp_path / "train", params)
    assert sorted(c.name for c in found) == [
        "train/0-base",
        "train/0-base:averaged",
        "train/1-base",
        "train/1-base:averaged",
    ]
    averaged = next(c for c in found if c.name == "train/0-base:averaged")
    assert averaged.variant == "base:averaged"
    assert averaged.value("val_loss") == 0.08 and averaged.value("ema_val_loss") == 0.08
    assert averaged.checkpoint.endswith("0-base/checkpoints/averaged.ckpt")

    out = tmp_path / "sel"
    selection = selection_stage(params=params, train_root=tmp_path / "train", out_dir=out)
    assert selection["winner"] == "train/0-base:averaged"
    assert (out / "winner" / "model.ckpt").read_bytes() == b"averaged of 0-base"
    # Read back from winner/ (as final selection does): the averaged model's metrics, and the
    # weights that were copied there.
    back = winner_candidate(out / "winner", selection["winner"])
    assert back.name == "train/0-base:averaged" and back.value("val_loss") == 0.08
    assert Path(back.checkpoint) == out / "winner" / "model.ckpt"
    assert winner_sources(back.run_dir, back.checkpoint)["model.ckpt"].read_bytes() == (
        b"averaged of 0-base"
    )


def test_runs_without_an_averaged_model_have_one_candidate(tmp_path: Path) -> None:
    write_run(tmp_path / "r", 0, 0.1)
    assert [c.name for c in run_candidates(tmp_path / "r", "r", "v")] == ["r"]
    assert load_candidate(tmp_path / "r", "r", averaged=True) is None
