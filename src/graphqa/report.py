"""``graphqa report``: the pipeline's results as PNG figures and one offline HTML page.

``dvc plots show`` draws one chart per metric file per run and needs a CDN to draw anything.
This module draws the handful of comparisons a user makes (sweep members' validation curves,
reliability raw vs calibrated, FLT keep fraction with seed spread, ranking loss per target)
with matplotlib, and writes a ``report.html`` that embeds them as data URIs with inline CSS and
no script, so it opens from a laptop, a CI artefact or an email without a network.

Three layers, each testable alone: ``load_inputs`` reads what exists under ``runs/`` (a
missing or malformed input becomes a note, never a crash: a half-finished pipeline still gets a
report), ``build_figures`` turns tables into PNG bytes (byte-identical for identical inputs:
fixed size, dpi, style and no timestamp in the PNG), ``render_html`` lays both out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: Figure width in inches and dpi: fixed so identical inputs give identical PNG bytes.
FIG_WIDTH = 9.0
DPI = 100
#: Matplotlib settings every figure is drawn with, whatever the user's matplotlibrc says.
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "graphqa-report",
    "path.simplify": False,
}
#: Validation curves drawn per run: (metrics.csv column, axis label, which way is better).
CURVE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("val_loss", "validation loss", "lower is better"),
    ("val_spearman", "validation Spearman", "higher is better"),
)
#: FLT summary columns drawn against the keep fraction.
FLT_METRICS: tuple[tuple[str, str], ...] = (
    ("val_loss", "validation loss"),
    ("val_spearman", "validation Spearman"),
)
#: Reliability files: (label, path under runs/).
RELIABILITY_FILES: tuple[tuple[str, str], ...] = (
    ("val_calib (fitted on)", "calibration/reliability.csv"),
    ("test (held-out targets)", "evaluate/reliability.csv"),
)
#: Column naming the score kind in a reliability table (first present wins).
SERIES_COLUMNS = ("calibration", "kind", "method")
#: Leaderboards shown, in order: (heading, path under runs/).
LEADERBOARDS: tuple[tuple[str, str], ...] = (
    ("Final selection: sweep winner vs fine-tunes", "final_selection/leaderboard.csv"),
    ("Sweep selection", "selection/leaderboard.csv"),
)
REPORT_HTML = "report.html"

CAPTIONS = {
    "val_curves": (
        "One line per training run (solid: sweep member, dashed: fine-tune). The spread between"
        " seeds of the same recipe is the noise floor: a variant beats another only when its"
        " curves sit apart by more than that spread. A curve still improving at its last epoch"
        " stopped early; one that turns back up after its best epoch is overfitting (selection"
        " keeps the best epoch)."
    ),
    "reliability": (
        "Each point is a bin of models: mean predicted score against mean observed DockQ;"
        " marker area grows with the models in the bin. Points on the dashed diagonal are"
        " calibrated, points below it mean the scorer promises more than the models deliver."
        " The calibrated curve should hug the diagonal on val_calib (where it was fitted); the"
        " test panel shows whether that holds on targets calibration never saw. Bins with few"
        " models are noisy."
    ),
    "flt": (
        "Small points: one retrain per seed; line and bars: mean ± 1 sd over seeds; grey band:"
        " the unpruned model (largest keep fraction), mean ± sd. Pruning to a smaller fraction is"
        " safe only when its bar overlaps the band or is better; a difference smaller than the"
        " bars is seed noise, not a verdict. The dotted line marks the recommended fraction."
    ),
    "per_target": (
        "Ranking loss of each test target: best DockQ among its models minus the DockQ of the"
        " model the scorer ranks first (0: it picked the best). The dashed line is the mean a"
        " headline number reports; when a few targets carry most of it, look at those targets"
        " before trusting the average."
    ),
}


@dataclass
class ReportInputs:
    """Everything the report shows, as read from a runs folder, plus what could not be read."""

    runs: Path
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    reliability: dict[str, pd.DataFrame] = field(default_factory=dict)
    flt: pd.DataFrame | None = None
    flt_recommended: float | None = None
    per_target: pd.DataFrame | None = None
    leaderboards: dict[str, pd.DataFrame] = field(default_factory=dict)
    headline: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    """One rendered chart: file stem, heading, PNG bytes and what to look for."""

    key: str
    title: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class ReportResult:
    out: Path
    files: list[Path]
    notes: list[str]


# --------------------------------------------------------------------------- loading


def natural_key(text: str) -> list[Any]:
    """Sort ``train/10-base`` after ``train/2-base``: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def read_table(
    path: Path, required: Sequence[str], notes: list[str], what: str
) -> pd.DataFrame | None:
    """A CSV with the ``required`` columns, or None and one note saying which chart is skipped."""
    if not path.is_file():
        notes.append(f"{path}: missing; {what} skipped")
        return None
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:  # pandas' parse errors are ValueErrors
        notes.append(f"{path}: unreadable as CSV ({exc}); {what} skipped")
        return None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        notes.append(
            f"{path}: '{absent[0]}': expected columns {list(required)}, got"
            f" {list(frame.columns)}; {what} skipped"
        )
        return None
    return frame


def read_json(path: Path, notes: list[str], what: str) -> Any | None:
    """A JSON document, or None and a note (missing or malformed)."""
    if not path.is_file():
        notes.append(f"{path}: missing; {what} skipped")
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        notes.append(f"{path}: not valid JSON ({exc}); {what} skipped")
        return None


def run_folders(runs: Path) -> dict[str, tuple[Path, bool]]:
    """Training run folders by name -> (folder, is a fine-tune): sweep members first."""
    found: dict[str, tuple[Path, bool]] = {}
    for sub, finetune in (("train", False), ("finetune_phase2", True)):
        parent = runs / sub
        dirs = [d for d in parent.iterdir() if d.is_dir()] if parent.is_dir() else []
        for d in sorted(dirs, key=lambda p: natural_key(p.name)):
            found[f"{sub}/{d.name}"] = (d, finetune)
        if sub == "train" and (runs / "finetune_phase1").is_dir():
            found["finetune_phase1"] = (runs / "finetune_phase1", True)
    return found


def load_curves(runs: Path, notes: list[str]) -> dict[str, pd.DataFrame]:
    """Per-epoch metrics of every run that has at least one epoch."""
    curves: dict[str, pd.DataFrame] = {}
    for name, (folder, _) in run_folders(runs).items():
        frame = read_table(folder / "metrics.csv", ["epoch"], notes, f"curves of {name}")
        if frame is None:
            continue
        if frame.empty:
            notes.append(f"{folder / 'metrics.csv'}: no epochs (skipped phase?); not drawn")
            continue
        curves[name] = frame
    if not curves:
        notes.append(f"{runs}: no run with a metrics.csv; validation curves skipped")
    return curves


def is_finetune(name: str) -> bool:
    return name.startswith("finetune")


def seed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-seed rows of an FLT summary: summary rows (``seed`` = mean, sd, empty) dropped.

    A summary without a ``seed`` column (one retrain per fraction) is all per-seed rows.
    """
    if "seed" not in frame.columns:
        return frame
    numeric = pd.to_numeric(frame["seed"], errors="coerce")
    return frame[numeric.notna() & ~numeric.isin([math.inf, -math.inf])]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested metrics as dotted keys (``test.spearman.ci_low``); lists kept as JSON text."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(data) if isinstance(data, list) else data}


def load_inputs(runs: str | Path) -> ReportInputs:
    """Read every table the report shows; what is missing or malformed becomes a note."""
    runs = Path(runs)
    if not runs.is_dir():
        raise FileNotFoundError(f"{runs}: no such runs folder")
    inputs = ReportInputs(runs=runs)
    notes = inputs.notes
    inputs.curves = load_curves(runs, notes)
    for label, rel in RELIABILITY_FILES:
        frame = read_table(
            runs / rel, ["mean_predicted", "mean_observed"], notes, f"reliability ({label})"
        )
        if frame is not None:
            inputs.reliability[label] = frame
    flt = read_table(runs / "flt_summary/flt_summary.csv", ["keep_fraction"], notes, "FLT chart")
    if flt is not None and not any(m in flt.columns for m, _ in FLT_METRICS):
        notes.append(
            f"{runs / 'flt_summary/flt_summary.csv'}: expected one of"
            f" {[m for m, _ in FLT_METRICS]}, got {list(flt.columns)}; FLT chart skipped"
        )
        flt = None
    inputs.flt = None if flt is None else seed_rows(flt)
    rec_path = runs / "flt_summary/recommendation.json"
    if inputs.flt is not None and rec_path.is_file():
        rec = read_json(rec_path, notes, "recommended keep fraction marker")
        if isinstance(rec, dict) and isinstance(rec.get("keep_fraction"), (int, float)):
            inputs.flt_recommended = float(rec["keep_fraction"])
    per_target = read_table(
        runs / "evaluate/per_target.csv", ["ranking_loss"], notes, "per-target chart"
    )
    if per_target is not None and target_column(per_target) is None:
        notes.append(
            f"{runs / 'evaluate/per_target.csv'}: 'TARGET': expected a target column, got"
            f" {list(per_target.columns)}; per-target chart skipped"
        )
        per_target = None
    inputs.per_target = per_target
    for heading, rel in LEADERBOARDS:
        board = read_table(runs / rel, [], notes, f"leaderboard '{heading}'")
        if board is not None:
            inputs.leaderboards[heading] = board
    metric_files = sorted(runs.glob("*/metrics.json"), key=lambda p: natural_key(str(p)))
    for path in metric_files:
        data = read_json(path, notes, "its headline metrics")
        if isinstance(data, dict):
            inputs.headline[path.parent.name] = flatten(data)
        elif data is not None:
            notes.append(f"{path}: expected a JSON object, got {type(data).__name__}; skipped")
    if not metric_files:
        notes.append(f"{runs}: no */metrics.json; headline metrics skipped")
    return inputs


def target_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in ("TARGET", "target") if c in frame.columns), None)


# --------------------------------------------------------------------------- figures


def png_bytes(fig: Any) -> bytes:
    """PNG of a figure without the Software/date chunks, so equal inputs give equal bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _new_figure(height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(FIG_WIDTH, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce")


def plot_val_curves(curves: dict[str, pd.DataFrame], notes: list[str]) -> bytes | None:
    """Every run's validation metrics per epoch, one panel per metric, overlaid."""
    import matplotlib as mpl

    panels = [m for m in CURVE_METRICS if any(m[0] in f.columns for f in curves.values())]
    missing = [c for c, _, _ in CURVE_METRICS if c not in {p[0] for p in panels}]
    if curves and missing:
        notes.append(f"no run's metrics.csv has {missing}; those curve panels skipped")
    if not panels:
        return None
    fig, axes = _new_figure(4.0, len(panels))
    colours = mpl.colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for i, (name, frame) in enumerate(curves.items()):
        style = "--" if is_finetune(name) else "-"
        for ax, (column, _, _) in zip(axes, panels, strict=True):
            if column not in frame.columns:
                continue
            ax.plot(
                _numeric(frame, "epoch"),
                _numeric(frame, column),
                linestyle=style,
                marker=".",
                color=colours(i % colours.N),
                label=name,
            )
    for ax, (_, label, better) in zip(axes, panels, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} ({better})")
    axes[-1].legend(fontsize=7, loc="best")
    return png_bytes(fig)


def plot_reliability(tables: dict[str, pd.DataFrame]) -> bytes | None:
    """Reliability diagrams, raw vs calibrated, one panel per split."""
    if not tables:
        return None
    fig, axes = _new_figure(4.2, len(tables))
    for ax, (label, frame) in zip(axes, tables.items(), strict=True):
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        series_col = next((c for c in SERIES_COLUMNS if c in frame.columns), None)
        groups = (
            [(str(k), g) for k, g in frame.groupby(series_col, sort=False)]
            if series_col
            else [("scores", frame)]
        )
        for kind, group in groups:
            sizes = (
                _numeric(group, "count").fillna(0).clip(lower=1).pow(0.5) * 6
                if "count" in group.columns
                else 20
            )
            x, y = _numeric(group, "mean_predicted"), _numeric(group, "mean_observed")
            (line,) = ax.plot(x, y, marker="", label=kind)
            ax.scatter(x, y, s=sizes, color=line.get_color(), zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted score")
        ax.set_ylabel("mean observed DockQ")
        ax.set_title(label)
        ax.legend(fontsize=7, loc="upper left")
    return png_bytes(fig)


def flt_stats(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per keep fraction: n seeds, mean and sd (sd NaN with one seed) of ``column``."""
    values = pd.DataFrame(
        {"keep_fraction": _numeric(frame, "keep_fraction"), "value": _numeric(frame, column)}
    ).dropna()
    stats = values.groupby("keep_fraction")["value"].agg(["count", "mean", "std"])
    return stats.sort_index()


def plot_flt(frame: pd.DataFrame, recommended: float | None) -> bytes | None:
    """Validation metrics per keep fraction: every seed, mean ± sd, and the unpruned band."""
    panels = [m for m in FLT_METRICS if m[0] in frame.columns]
    if not panels or frame.empty:
        return None
    fig, axes = _new_figure(3.8, len(panels))
    for ax, (column, label) in zip(axes, panels, strict=True):
        stats = flt_stats(frame, column)
        if stats.empty:
            continue
        base = stats.iloc[-1]  # largest keep fraction = the unpruned reference
        if not math.isnan(base["std"]):
            ax.axhspan(
                base["mean"] - base["std"],
                base["mean"] + base["std"],
                color="grey",
                alpha=0.2,
                label=f"keep {stats.index[-1]:g}: mean ± sd",
            )
        fractions = _numeric(frame, "keep_fraction")
        shift = 0.015 * (float(stats.index.max() - stats.index.min()) or 1.0)
        ax.scatter(
            fractions - shift,  # beside the error bar, not hidden under it
            _numeric(frame, column),
            s=14,
            alpha=0.5,
            color="tab:blue",
            label="one seed",
        )
        ax.errorbar(
            stats.index,
            stats["mean"],
            yerr=stats["std"].fillna(0),
            color="tab:blue",
            marker="o",
            capsize=4,
            label="mean ± sd over seeds",
        )
        if recommended is not None:
            ax.axvline(recommended, linestyle=":", color="tab:red", label="recommended")
        ax.set_xlabel("keep fraction (share of feature groups kept)")
        ax.set_ylabel(label)
        n = int(stats["count"].max())
        ax.set_title(f"{label} ({n} seed{'s' if n != 1 else ''} per fraction)")
    axes[0].legend(fontsize=7, loc="best")
    return png_bytes(fig)


def plot_per_target(frame: pd.DataFrame) -> bytes | None:
    """Horizontal bar per target, worst at the top, with the mean the headline reports."""
    target = target_column(frame)
    if target is None:
        return None
    data = pd.DataFrame(
        {"target": frame[target].astype(str), "loss": _numeric(frame, "ranking_loss")}
    ).dropna()
    if data.empty:
        return None
    data = data.sort_values(["loss", "target"], ascending=[True, False], kind="mergesort")
    height = min(2.0 + 0.22 * len(data), 30.0)
    fig, (ax,) = _new_figure(height)
    ax.barh(data["target"], data["loss"], color="tab:orange")
    mean = float(data["loss"].mean())
    ax.axvline(mean, linestyle="--", color="black", label=f"mean {mean:.3f}")
    ax.set_xlabel("ranking loss (best DockQ − DockQ of top-ranked model)")
    ax.set_ylabel("test target")
    ax.set_title(f"Ranking loss per test target ({len(data)} targets)")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    return png_bytes(fig)


def build_figures(inputs: ReportInputs) -> list[Figure]:
    """Every chart the inputs allow, in reading order, drawn in a fixed style."""
    import matplotlib as mpl
    import matplotlib.style

    figures: list[Figure] = []
    with mpl.rc_context():
        matplotlib.style.use("default")  # ignore the user's matplotlibrc: same bytes everywhere
        mpl.rcParams.update(STYLE)
        charts: list[tuple[str, str, bytes | None]] = [
            (
                "val_curves",
                "Validation curves of every training run",
                plot_val_curves(inputs.curves, inputs.notes) if inputs.curves else None,
            ),
            (
                "reliability",
                "Reliability: raw vs calibrated scores",
                plot_reliability(inputs.reliability),
            ),
            (
                "flt",
                "Feature pruning (FLT): keep fraction vs validation metrics",
                None if inputs.flt is None else plot_flt(inputs.flt, inputs.flt_recommended),
            ),
            (
                "per_target",
                "Test ranking loss per target",
                None if inputs.per_target is None else plot_per_target(inputs.per_target),
            ),
        ]
    for key, title, png in charts:
        if png is not None:
            figures.append(Figure(key, title, png, CAPTIONS[key]))
    return figures


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 960px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0 2rem; } img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #444; margin-top: 0.4rem; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 1rem; }
.notes li { font-family: ui-monospace, monospace; font-size: 0.8rem; }
.scroll { overflow-x: auto; }
"""


def format_cell(value: Any) -> str:
    """Table cell text: 4 significant digits for floats, a dash for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _frame_rows(frame: pd.DataFrame) -> list[list[Any]]:
    return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def render_html(inputs: ReportInputs, figures: Sequence[Figure]) -> str:
    """One self-contained page: inline CSS, figures as data URIs, no script, no link."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>graphqa report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>graphqa results</h1>",
        f"<p>Read from <code>{html.escape(str(inputs.runs))}</code>. Every number below is"
        " copied from the pipeline's outputs; nothing is recomputed.</p>",
    ]
    if inputs.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in inputs.notes)
        parts.append(
            f'<div class="notes"><p>Not shown (missing or unreadable input):</p><ul>{items}</ul>'
            "</div>"
        )
    parts.append("<h2>Headline metrics</h2>")
    if inputs.headline:
        for stage, metrics in inputs.headline.items():
            parts.append(f"<h3>{html.escape(stage)}</h3>")
            parts.append(html_table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
    else:
        parts.append("<p>No metrics.json found.</p>")
    parts.append("<h2>Leaderboards</h2>")
    if inputs.leaderboards:
        for heading, board in inputs.leaderboards.items():
            parts.append(f"<h3>{html.escape(heading)}</h3>")
            parts.append(html_table(list(board.columns), _frame_rows(board)))
    else:
        parts.append("<p>No leaderboard found.</p>")
    parts.append("<h2>Charts</h2>")
    if not figures:
        parts.append("<p>No chart could be drawn from the inputs.</p>")
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(
            f'<figure id="{fig.key}"><h3>{html.escape(fig.title)}</h3>'
            f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><strong>What to look for.</strong> {html.escape(fig.caption)}"
            "</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- writing


def write_report(runs: str | Path = "runs", out: str | Path = "report") -> ReportResult:
    """Write ``<out>/<chart>.png`` and ``<out>/report.html``, swapping the folder in whole.

    ``out`` is replaced as a unit, so it must be a new folder or an earlier report: anything
    else (say ``--out runs``) is refused rather than deleted.
    """
    from graphqa.contract import atomic_dir

    out = Path(out)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_HTML).is_file())
    ):
        raise ValueError(
            f"{out}: exists and is not a graphqa report folder (no {REPORT_HTML});"
            " refusing to replace it, choose another --out"
        )
    inputs = load_inputs(runs)
    figures = build_figures(inputs)
    page = render_html(inputs, figures)
    with atomic_dir(out) as tmp:
        for fig in figures:
            (tmp / f"{fig.key}.png").write_bytes(fig.png)
        (tmp / REPORT_HTML).write_text(page, encoding="utf-8")
    files = [out / f"{fig.key}.png" for fig in figures] + [out / REPORT_HTML]
    return ReportResult(out=out, files=files, notes=list(inputs.notes))
