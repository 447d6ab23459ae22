"""`graphqa report`: offline HTML, embedded deterministic figures, notes instead of crashes,
and the DVC plot templates that draw the same comparisons in `dvc plots show`."""

from __future__ import annotations

import base64
import io
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
    flt_stats,
    load_inputs,
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
    _write(
        root / "evaluate/per_target.csv",
        "TARGET,models,ranking_loss\nT1,8,0.0\nT2,8,0.25\nT3,8,0.05\n",
    )
    _write(root / "flt_summary/flt_summary.csv", FLT_CSV)
    _write(root / "flt_summary/recommendation.json", json.dumps({"keep_fraction": 1.0}))
    board = (
        "rank,name,val_loss,val_spearman\n1,train/0-base,0.0100,0.93\n2,train/1-base,0.0104,0.92\n"
    )
    _write(root / "selection/leaderboard.csv", board)
    _write(root / "final_selection/leaderboard.csv", board)
    _write(
        root / "evaluate/metrics.json",
        json.dumps(
            {"test_spearman": 0.9015, "test_ranking_loss": {"mean": 0.1, "ci95": [0.0, 0.2]}}
        ),
    )
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
    assert all(v.startswith("data:") for v in re.findall(r'(?:src|href)="([^"]*)"', page))
    # tables: leaderboard rows and (nested) headline metrics
    assert "train/1-base" in page and "test_spearman" in page and "test_ranking_loss.mean" in page
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
