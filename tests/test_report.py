"""`graphqa report`: offline HTML, embedded deterministic figures, notes instead of crashes,
and the DVC plot templates that draw the same comparisons in `dvc plots show`."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from graphqa.cli import main
from graphqa.report import (
    REPORT_HTML,
    build_figures,
    draw_per_target,
    flt_stats,
    load_inputs,
    per_target_losses,
    ranker_value,
    read_json_or_note,
    render_html,
    seed_rows,
    write_report,
)

from .conftest import REPO

CHARTS = {"val_curves", "reliability", "flt", "per_target"}

# FLT summary in the multi-seed shape: per-seed rows plus mean/sd rows the chart must ignore.
FLT_CSV = """keep_fraction,seed,val_loss,val_spearman
1.0,0,0.0100,0.930
1.0,1,0.0104,0.928
1.0,2,0.0102,0.929
1.0,mean,0.0102,0.929
1.0,sd,0.0002,0.001
0.5,0,0.0110,0.925
0.5,1,0.0116,0.921
0.5,2,0.0113,0.923
0.5,mean,0.0113,0.923
0.5,sd,0.0003,0.002
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _curve(loss0: float) -> str:
    rows = ["epoch,train_loss,val_loss,val_spearman"]
    rows += [
        f"{e},{loss0 / (e + 1):.5f},{loss0 / (e + 1.5):.5f},{0.8 + 0.03 * e:.4f}" for e in range(4)
    ]
    return "\n".join(rows) + "\n"


def _reliability() -> str:
    rows = ["calibration,bin_lower,bin_upper,count,mean_predicted,mean_observed"]
    for kind, bias in (("raw", -0.05), ("calibrated", 0.0)):
        rows += [
            f"{kind},{b / 4},{(b + 1) / 4},{10 + b},{b / 4 + 0.1},{b / 4 + 0.1 + bias}"
            for b in range(4)
        ]
    return "\n".join(rows) + "\n"


# The evaluate stage's test comparison (evaluate/summary.csv layout): the shipped scorer is the
# trees family here, so a page that defaulted to "GNN" would fail the answer test.
SHIPPED = "trees"
TEST_SUMMARY = [
    # ranker, metric, value, ci_low, ci_high
    ("shipped", "ranking_loss", 0.123456, 0.045612, 0.234489),
    ("shipped", "spearman_per_target_mean", 0.61234, 0.51111, 0.70222),
    ("shipped", "spearman_pooled", 0.71234, 0.60111, 0.80222),
    ("gnn", "ranking_loss", 0.154321, 0.061111, 0.262222),
    ("gnn", "spearman_per_target_mean", 0.58765, 0.48111, 0.69222),
    ("gnn", "spearman_pooled", 0.69876, 0.58111, 0.79222),
    ("trees", "ranking_loss", 0.123456, 0.045612, 0.234489),
    ("trees", "spearman_per_target_mean", 0.61234, 0.51111, 0.70222),
    ("trees", "spearman_pooled", 0.71234, 0.60111, 0.80222),
    ("blend", "ranking_loss", 0.133333, 0.051111, 0.241111),
    ("blend", "spearman_per_target_mean", 0.60001, 0.50001, 0.70001),
    ("blend", "spearman_pooled", 0.70001, 0.60001, 0.80001),
    ("random", "ranking_loss", 0.512345, 0.401111, 0.621111),
    ("random", "spearman_per_target_mean", 0.0, 0.0, 0.0),
    ("shipped_minus_gnn", "ranking_loss", -0.030865, -0.081111, 0.021111),
    ("shipped_minus_trees", "ranking_loss", 0.0, 0.0, 0.0),
    ("shipped_minus_blend", "ranking_loss", -0.009877, -0.041111, 0.021111),
    ("shipped_minus_random", "ranking_loss", -0.388889, -0.501111, -0.271111),
]
# Per target: the shipped (= trees) loss unprefixed, every reference as <ranker>_ranking_loss.
PER_TARGET_CSV = (
    "TARGET,n_models,best_dockq,ranking_loss,gnn_ranking_loss,trees_ranking_loss,"
    "blend_ranking_loss,random_ranking_loss\n"
    "T1,8,0.9,0.0,0.1,0.0,0.05,0.4\n"
    "T2,8,0.8,0.25,0.3,0.25,0.2,0.6\n"
    "T3,8,0.7,0.05,0.0,0.05,0.0,0.5\n"
)
SELECTION_REASON = "train/0-base: best seed of the best variant (selection verdict line)"
FINAL_REASON = "train/0-base: the sweep winner stays; no fine-tune beats it (final verdict line)"
SCORER_REASON = "trees: beats gnn beyond the noise (scorer verdict line)"
FLT_RULE = "smallest keep fraction not worse than keep 1 (flt rule line)"


def _evaluate_metrics() -> dict[str, object]:
    """evaluate/metrics.json in the stage's flat key layout, from the same numbers."""
    metrics: dict[str, object] = {
        "shipped_family": SHIPPED,
        "test_n_targets": 3,
        "test_n_models": 24,
    }
    for ranker, metric, value, low, high in TEST_SUMMARY:
        prefix = {"shipped": "test"}.get(ranker, ranker if "minus" in ranker else f"ref_{ranker}")
        key = f"{prefix}_{metric}"
        metrics |= {key: value, f"{key}_ci_low": low, f"{key}_ci_high": high}
    return metrics


def _write_results(root: Path) -> None:
    """What the evaluate, bundle, scorer, selection and FLT stages write for the answer."""
    summary = ["ranker,metric,value,ci_low,ci_high"]
    summary += [",".join(str(v) for v in row) for row in TEST_SUMMARY]
    _write(root / "evaluate/summary.csv", "\n".join(summary) + "\n")
    _write(root / "evaluate/metrics.json", json.dumps(_evaluate_metrics()))
    _write(root / "evaluate/per_target.csv", PER_TARGET_CSV)
    _write(root / "bundle/scorer.json", json.dumps({"family": SHIPPED, "blend_weight": 0.8}))
    _write(
        root / "bundle/metrics.json",
        json.dumps(
            {
                "model": "train/0-base",
                "why": f"final selection: {FINAL_REASON}",
                "scorer": {"family": SHIPPED, "reason": SCORER_REASON},
            }
        ),
    )
    evidence = {
        "candidate": "gnn",
        "reference": SHIPPED,
        "ci": [0.01, 0.2],
        "mean_diff": 0.1,
        "better_beyond_noise": False,
        "n_targets": 4,
        "per_target": "out-of-fold ranking loss",
        "reason": "not better beyond the noise: difference +0.1 [+0.01, +0.2]",
        "spearman_per_target_diff": {"estimate": -0.1, "ci": [-0.2, -0.01]},
    }
    candidates = {
        f: {
            "oof_ranking_loss": 0.15 + i / 10,
            "val_ranking_loss": 0.1 + i / 10,
            "oof_spearman_pooled": 0.9 - i / 10,
        }
        for i, f in enumerate(("trees", "gnn", "blend"))
    }
    _write(
        root / "scorer/scorer.json",
        json.dumps(
            {
                "family": SHIPPED,
                "reason": SCORER_REASON,
                "requested": "auto",
                "evidence": [evidence],
                "candidates": candidates,
            }
        ),
    )
    _write(
        root / "selection/selection.json",
        json.dumps(
            {
                "winner": "train/0-base",
                "reason": SELECTION_REASON,
                "ranking_metric": "selection_metric",
                "direction": "min",
                "variants": [
                    {"variant": "base", "n_seeds": 2, "mean": -0.8, "sd": 0.01, "members": []}
                ],
            }
        ),
    )
    final_evidence = {
        **evidence,
        "candidate": "finetune_phase2/101",
        "reference": "train/0-base",
        "per_target": "per-target selection score",
    }
    _write(
        root / "final_selection/selection.json",
        json.dumps(
            {"winner": "train/0-base", "reason": FINAL_REASON, "evidence": [final_evidence]}
        ),
    )
    fraction = {
        "keep_fraction": 0.5,
        "n_seeds": 3,
        "val_loss": {"mean": 0.0113, "sd": 0.0003},
        "rel_loss_increase": {"estimate": 0.1, "ci": [0.05, 0.15]},
        "verdict": "rejected",
    }
    _write(
        root / "flt_summary/recommendation.json",
        json.dumps(
            {
                "keep_fraction": 1.0,
                "baseline_keep_fraction": 1.0,
                "rule": FLT_RULE,
                "fractions": [fraction],
            }
        ),
    )


def _sections(page: str) -> list[tuple[str, str]]:
    """(h2 heading text, HTML up to the next h2) in page order; the title's h1 comes first."""
    assert page.index("<h1") < page.index("<h2")
    starts = [m.start() for m in re.finditer(r"<h2[ >]", page)] + [len(page)]
    sections = []
    for start, end in itertools.pairwise(starts):
        chunk = page[start:end]
        heading = re.sub(r"<[^>]+>", "", chunk[: chunk.index("</h2>")])
        sections.append((heading, chunk))
    return sections


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A small, hand-made runs folder with every input the report reads."""
    root = tmp_path / "runs"
    _write(root / "train/0-base/metrics.csv", _curve(0.04))
    _write(root / "train/1-base/metrics.csv", _curve(0.05))
    _write(root / "finetune_phase2/101/metrics.csv", _curve(0.02))
    _write(root / "finetune_phase1/metrics.csv", "epoch\n")  # a skipped phase: no epochs
    _write(root / "calibration/reliability.csv", _reliability())
    _write(root / "evaluate/reliability.csv", _reliability())
    _write(root / "flt_summary/flt_summary.csv", FLT_CSV)
    board = (
        "rank,name,val_loss,val_spearman\n1,train/0-base,0.0100,0.93\n2,train/1-base,0.0104,0.92\n"
    )
    _write(root / "selection/leaderboard.csv", board)
    _write(root / "final_selection/leaderboard.csv", board)
    _write_results(root)
    return root


def test_html_opens_offline_and_embeds_every_figure(runs: Path, tmp_path: Path) -> None:
    result = write_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / REPORT_HTML).read_text()
    pngs = {p.stem: p.read_bytes() for p in (tmp_path / "report").glob("*.png")}
    assert set(pngs) == CHARTS
    for png in pngs.values():
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    # nothing fetched from a network: no script, no stylesheet link, no URL at all
    assert "<script" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(v.startswith(("data:", "#")) for v in links)  # images inline, links in-page
    # tables: leaderboard rows and (nested) metrics.json values
    assert "train/1-base" in page and "test_ranking_loss_ci_low" in page
    assert "scorer.reason" in page  # bundle/metrics.json flattened
    assert "What to look for" in page
    assert result.files[-1] == tmp_path / "report" / REPORT_HTML


def test_figures_and_page_are_byte_identical_across_runs(runs: Path, tmp_path: Path) -> None:
    write_report(runs, tmp_path / "a")
    write_report(runs, tmp_path / "b")
    for name in [*(f"{c}.png" for c in CHARTS), REPORT_HTML]:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes(), name
    png = (tmp_path / "a" / "flt.png").read_bytes()
    assert b"tEXt" not in png and b"tIME" not in png  # no software/version or date chunk


def test_missing_and_malformed_inputs_become_notes(runs: Path, tmp_path: Path) -> None:
    (runs / "evaluate/per_target.csv").unlink()
    _write(runs / "flt_summary/flt_summary.csv", "fraction,val_loss\n1.0,0.01\n")
    result = write_report(runs, tmp_path / "report")
    notes = "\n".join(result.notes)
    assert "per_target.csv: missing; per-target chart skipped" in notes
    assert "flt_summary.csv: 'keep_fraction': expected columns" in notes
    assert "finetune_phase1/metrics.csv: no epochs" in notes
    written = {p.stem for p in (tmp_path / "report").glob("*.png")}
    assert written == CHARTS - {"per_target", "flt"}
    page = (tmp_path / "report" / REPORT_HTML).read_text()
    assert "per_target.csv: missing" in page


def test_flt_chart_uses_seed_rows_only() -> None:
    frame = seed_rows(pd.read_csv(io.StringIO(FLT_CSV)))
    assert sorted(frame["seed"].astype(int)) == [0, 0, 1, 1, 2, 2]
    stats = flt_stats(frame, "val_loss")
    seeds_05 = [0.0110, 0.0116, 0.0113]
    assert stats.loc[0.5, "count"] == 3
    assert stats.loc[0.5, "mean"] == pytest.approx(statistics.mean(seeds_05))
    assert stats.loc[0.5, "std"] == pytest.approx(statistics.stdev(seeds_05))


def test_flt_summary_without_seed_column_draws_one_point_per_fraction(runs: Path) -> None:
    _write(runs / "flt_summary/flt_summary.csv", "keep_fraction,val_loss\n1.0,0.01\n0.5,0.02\n")
    inputs = load_inputs(runs)
    assert inputs.flt is not None and len(inputs.flt) == 2
    assert "flt" in {f.key for f in build_figures(inputs)}


def test_cli_report_writes_and_refuses_to_clobber(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (runs / "selection/leaderboard.csv").unlink()
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "report")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith(REPORT_HTML)
    assert "note: " in captured.err and "selection/leaderboard.csv: missing" in captured.err
    # rerunning over an earlier report replaces it; any other folder is left alone
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "report")]) == 0
    assert main(["report", "--runs", str(runs), "--out", str(runs)]) == 2
    assert "not a graphqa report folder" in capsys.readouterr().err
    assert (runs / "evaluate/per_target.csv").is_file()


# --------------------------------------------------------------------------- answer first


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def test_page_opens_with_the_answer_shipped_family_and_test_ranking(
    runs: Path, tmp_path: Path
) -> None:
    """The first section after the title names the shipped family and carries the test
    ranking loss and Spearman (with intervals) the evaluate stage wrote, for it, every other
    family and the random pick."""
    write_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / REPORT_HTML).read_text()
    metrics = json.loads((runs / "evaluate/metrics.json").read_text())
    heading, answer = _sections(page)[0]
    assert "shipped scorer is trees" in heading
    loss = _interval(
        metrics["test_ranking_loss"],
        metrics["test_ranking_loss_ci_low"],
        metrics["test_ranking_loss_ci_high"],
    )
    assert loss in answer
    assert (
        "pooled Spearman "
        + _interval(
            metrics["test_spearman_pooled"],
            metrics["test_spearman_pooled_ci_low"],
            metrics["test_spearman_pooled_ci_high"],
        )
        in answer
    )
    # every candidate family and the random pick, with their own test numbers
    for ranker in ("gnn", "blend", "random"):
        assert (
            _interval(
                metrics[f"ref_{ranker}_ranking_loss"],
                metrics[f"ref_{ranker}_ranking_loss_ci_low"],
                metrics[f"ref_{ranker}_ranking_loss_ci_high"],
            )
            in answer
        ), ranker
    assert "random pick" in answer and "GNN" in answer and "blend" in answer
    # ranked by mean test loss: trees (0.123) < blend (0.133) < GNN (0.154)
    assert "ranks <strong>1st</strong>" in answer
    assert "better than random pick beyond the noise" in answer
    assert re.search(r'<tr class="shipped"><td[^>]*>1</td><td[^>]*>trees\xa0\(ships\)</td>', answer)
    # the key dump is not what the page opens with: it is collapsed at the bottom
    assert "scorer.reason" not in answer
    last_heading, last = _sections(page)[-1]
    assert last_heading == "All values" and "<details><summary>All bundle values" in last


def test_answer_falls_back_to_evaluate_metrics_json(runs: Path) -> None:
    (runs / "evaluate/summary.csv").unlink()
    inputs = load_inputs(runs)
    assert any("summary.csv: missing" in n for n in inputs.notes)
    assert inputs.test is not None and inputs.test.source.name == "metrics.json"
    assert ranker_value(inputs.test, "shipped", "ranking_loss") == (0.123456, 0.045612, 0.234489)
    assert ranker_value(inputs.test, "random", "ranking_loss")[0] == 0.512345
    assert ranker_value(inputs.test, "shipped_minus_gnn", "ranking_loss")[0] == -0.030865


def test_answer_without_evaluate_outputs_is_a_note_not_a_crash(runs: Path, tmp_path: Path) -> None:
    for name in ("summary.csv", "metrics.json", "per_target.csv"):
        (runs / "evaluate" / name).unlink()
    (runs / "bundle/scorer.json").unlink()  # the family then comes from the scorer stage
    result = write_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / REPORT_HTML).read_text()
    heading, answer = _sections(page)[0]
    assert "shipped scorer is trees" in heading and "scorer/scorer.json" in answer
    assert "No test comparison" in answer
    notes = "\n".join(result.notes)
    assert "evaluate/summary.csv: missing" in notes and "bundle/scorer.json: missing" in notes


def test_decisions_follow_the_answer_in_pipeline_order_with_their_verdicts(
    runs: Path, tmp_path: Path
) -> None:
    write_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / REPORT_HTML).read_text()
    headings = [h for h, _ in _sections(page)]
    assert headings[:3] == [
        "Answer: the shipped scorer is trees",
        "Decisions and their evidence",
        "Charts",
    ]
    decisions = dict(_sections(page))["Decisions and their evidence"]
    positions = [
        decisions.index(text)
        for text in (SELECTION_REASON, FINAL_REASON, "recommended keep fraction: 1", FLT_RULE)
    ]
    positions.append(decisions.index(SCORER_REASON, decisions.index("Scorer choice")))
    assert positions == sorted(positions)
    assert "finetune_phase2/101" in decisions and "+0.1 [+0.01, +0.2]" in decisions
    assert "Full leaderboard" in decisions  # the leaderboards sit under their decision


def test_per_target_chart_shows_every_family_beside_the_shipped_one(runs: Path) -> None:
    inputs = load_inputs(runs)
    assert inputs.per_target is not None
    losses = per_target_losses(inputs.per_target)
    assert list(losses.columns) == ["shipped", "gnn", "trees", "blend", "random"]
    assert losses.loc["T2"].tolist() == [0.25, 0.3, 0.25, 0.2, 0.6]
    # shipped == its own family (trees): one series named after it, plus every other ranker
    fig = draw_per_target(losses, SHIPPED, {"shipped": 0.123456})
    assert fig is not None
    labels = [c.get_label() for c in fig.axes[0].containers]
    assert labels == ["trees (shipped): mean 0.123", "GNN", "blend", "random pick"]
    # a shipped score that ranks unlike every family is drawn as a series of its own
    fig = draw_per_target(losses, "gnn")
    assert fig is not None
    labels = [c.get_label() for c in fig.axes[0].containers]
    assert labels == ["shipped (GNN)", "GNN", "trees", "blend", "random pick"]
    page = render_html(inputs, build_figures(inputs))
    table = page[page.index("Per-target ranking loss as a table") :]
    header = re.search(r"<tr>(.*?)</tr>", table)
    assert header is not None
    assert re.findall(r"<th[^>]*>([^<]*)</th>", header.group(1)) == [
        "target",
        "shipped (trees)",
        "GNN",
        "trees",
        "blend",
        "random pick",
    ]


def test_tolerant_json_reader_wraps_the_contract_reader(tmp_path: Path) -> None:
    """Malformed JSON comes back as the contract reader's DataContractError message, noted."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    notes: list[str] = []
    assert read_json_or_note(bad, notes, "the thing") is None
    assert notes == [notes[0]]
    assert notes[0].startswith(f"{bad}: '<file>': expected valid JSON")
    assert notes[0].endswith("; the thing skipped")
    assert read_json_or_note(tmp_path / "none.json", notes, "other") is None
    assert notes[1] == f"{tmp_path / 'none.json'}: missing; other skipped"
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json_or_note(good, notes, "x") == {"a": 1} and len(notes) == 2


# --------------------------------------------------------------------------- DVC templates


@pytest.mark.parametrize(
    ("template", "x", "y", "rows"),
    [
        (
            "seed_errorbars",
            "keep_fraction",
            "val_loss",
            [{"keep_fraction": "1.0", "seed": "0", "val_loss": "0.01", "rev": "workspace"}],
        ),
        (
            "reliability",
            "mean_predicted",
            "mean_observed",
            [
                {
                    "calibration": "raw",
                    "mean_predicted": "0.1",
                    "mean_observed": "0.2",
                    "rev": "workspace",
                }
            ],
        ),
        (
            "runs_overlay",
            "epoch",
            "val_loss",
            [{"epoch": "0", "val_loss": "0.1", "rev": "workspace", "filename": "0-base"}],
        ),
    ],
)
def test_dvc_plot_templates_fill_every_anchor(
    template: str, x: str, y: str, rows: list[dict[str, str]]
) -> None:
    """The custom templates under .dvc/plots render through DVC's own renderer."""
    from dvc_render.vega import VegaRenderer

    renderer = VegaRenderer(
        rows, template, template=template, template_dir=str(REPO / ".dvc/plots"), x=x, y=y
    )
    spec = json.dumps(renderer.get_filled_template())
    assert "<DVC_METRIC_" not in spec
    assert f'"{y}"' in spec or f"'{y}'" in spec
