"""``graphqa report``: the pipeline's results as PNG figures and one offline HTML page.

``dvc plots show`` draws one chart per metric file per run and needs a CDN to draw anything.
This module writes a ``report.html`` a reader can act on, in reading order:

1. the answer: which scorer ships (GNN, trees or blend) and how it ranks on the test split
   against the other families and a random pick (mean per-target ranking loss and Spearman
   with 95 % intervals, as the ``evaluate`` stage wrote them);
2. the decisions that led there (sweep selection, final selection against the fine-tunes,
   feature pruning, scorer choice), each with the verdict line its stage recorded and the
   evidence behind it;
3. the charts (sweep members' validation curves, reliability raw vs calibrated, FLT keep
   fraction with seed spread, test ranking loss per target for every family);
4. every ``*/metrics.json`` value, collapsed at the bottom.

The page embeds the figures as data URIs, has inline CSS and no script, so it opens from a
laptop, a CI artefact or an email without a network. Every number is copied from the
pipeline's outputs; nothing is recomputed.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from graphqa.contract import DataContractError, read_json
from graphqa.files import atomic_dir

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

#: A JSON leaf as the report shows it.
Scalar = str | int | float | bool | None

#: Figure width in inches and dpi: fixed so identical inputs give identical PNG bytes.
FIG_WIDTH = 9.0
DPI = 100
#: Matplotlib settings every figure is drawn with, whatever the user's matplotlibrc says.
STYLE: dict[str, str | float | bool] = {
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
#: Scorer families a bundle can ship, in the order the report lists them.
FAMILIES = ("gnn", "trees", "blend")
#: Rankers of the evaluate stage: the shipped score, each family, the random pick.
RANKERS = ("shipped", *FAMILIES, "random")
RANKER_LABELS = {
    "shipped": "shipped",
    "gnn": "GNN",
    "trees": "trees",
    "blend": "blend",
    "random": "random pick",
}
RANKER_COLOURS = {
    "shipped": "tab:orange",
    "gnn": "tab:blue",
    "trees": "tab:green",
    "blend": "tab:purple",
    "random": "tab:gray",
}
#: Spearman flavours the answer shows: (metric in summary.csv, column heading).
SPEARMAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("spearman_per_target_mean", "Spearman, per-target mean"),
    ("spearman_pooled", "Spearman, pooled"),
)
SPEARMAN_METRICS = tuple(m for m, _ in SPEARMAN_COLUMNS)
SPEARMAN_PHRASES: tuple[tuple[str, str], ...] = (
    ("spearman_per_target_mean", "mean per-target Spearman"),
    ("spearman_pooled", "pooled Spearman"),
)
#: Where the shipped scorer's family is recorded, most authoritative first.
FAMILY_SOURCES = ("bundle/scorer.json", "scorer/scorer.json")
#: Decisions in pipeline order: (key, heading, verdict file under runs/, leaderboard or None).
DECISIONS: tuple[tuple[str, str, str, str | None], ...] = (
    ("selection", "Sweep selection", "selection/selection.json", "selection/leaderboard.csv"),
    (
        "final_selection",
        "Final selection: sweep winner vs fine-tunes",
        "final_selection/selection.json",
        "final_selection/leaderboard.csv",
    ),
    ("flt", "Feature pruning (FLT)", "flt_summary/recommendation.json", None),
    ("scorer", "Scorer choice: GNN, trees or blend", "scorer/scorer.json", None),
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
        "Ranking loss of each test target for every ranker the evaluate stage scored: best"
        " DockQ among the target's models minus the DockQ of the model the ranker puts first"
        " (0, the dot on the axis: it picked the best). Targets are sorted by the shipped"
        " scorer's loss, worst at the top; the dashed line is the shipped scorer's mean, the"
        " headline number. When a few targets carry most of a mean, look at those targets"
        " before trusting the average; where another family's bar is shorter than the shipped"
        " one, that family would have picked a better model for that target."
    ),
}


@dataclass(frozen=True)
class Table:
    """A small table for the page: column headings, rows of cells and an optional caption."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Scalar, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Decision:
    """One decision of the pipeline: the verdict line its stage recorded and the evidence."""

    key: str
    title: str
    source: Path
    verdict: str
    evidence: tuple[Table, ...] = ()


@dataclass(frozen=True)
class Shipped:
    """What the bundle ships: scorer family, model run and the recorded reasons."""

    family: str
    source: Path
    model: str | None = None
    why: str | None = None
    scorer_reason: str | None = None


@dataclass(frozen=True)
class TestComparison:
    """The evaluate stage's test-split numbers, one row per (ranker, metric).

    ``summary`` has the columns ``ranker, metric, value, ci_low, ci_high`` (the layout of
    ``evaluate/summary.csv``), whichever file it was read from.
    """

    summary: pd.DataFrame
    source: Path
    n_targets: int | None = None
    n_models: int | None = None
    family: str | None = None


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
    headline: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    shipped: Shipped | None = None
    test: TestComparison | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)
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
    """What ``write_report`` wrote: the folder, its files and the notes on skipped inputs."""

    out: Path
    files: list[Path]
    notes: list[str]


# --------------------------------------------------------------------------- loading


def natural_key(text: str) -> list[int | str]:
    """Sort key that compares digit runs as numbers (``train/10-base`` after ``train/2-base``).

    Args:
        text: The string to sort.

    Returns:
        The string split into alternating text and integer parts.
    """
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def read_table(
    path: Path, required: Sequence[str], notes: list[str], what: str
) -> pd.DataFrame | None:
    """Read a CSV that must have some columns, or note which part of the report is skipped.

    Args:
        path: The CSV file.
        required: Columns the table must have.
        notes: List the note is appended to when the table cannot be used.
        what: The part of the report that needs the table (ends the note).

    Returns:
        The table, or None when it is missing, unreadable or lacks a required column.
    """
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


def read_json_or_note(path: Path, notes: list[str], what: str) -> object | None:
    """Read a JSON document with the project's reader, or note why it was skipped.

    A thin tolerant wrapper around :func:`graphqa.contract.read_json`: its
    ``DataContractError`` (malformed JSON, naming the file) becomes a note, not a crash.

    Args:
        path: The JSON file.
        notes: List the note is appended to when the file cannot be read.
        what: The part of the report that needs the document (ends the note).

    Returns:
        The parsed document, or None when the file is missing or not valid JSON.
    """
    if not path.is_file():
        notes.append(f"{path}: missing; {what} skipped")
        return None
    try:
        return read_json(path)
    except DataContractError as exc:  # its message names the file already
        notes.append(f"{exc}; {what} skipped")
    except (ValueError, OSError) as exc:  # undecodable bytes, unreadable file
        notes.append(f"{path}: not readable as JSON ({exc}); {what} skipped")
    return None


def run_folders(runs: Path) -> dict[str, tuple[Path, bool]]:
    """Find the training run folders, sweep members first.

    Args:
        runs: The runs folder.

    Returns:
        Run name (``train/0-base``, ``finetune_phase1``...) -> (folder, is a fine-tune).
    """
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
    """Read the per-epoch metrics of every run that has at least one epoch.

    Args:
        runs: The runs folder.
        notes: List that collects a note per run that cannot be drawn.

    Returns:
        Run name -> its ``metrics.csv``.
    """
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
    """Whether a run name is a fine-tune (drawn dashed).

    Args:
        name: A run name from :func:`run_folders`.

    Returns:
        True for ``finetune_*`` runs.
    """
    return name.startswith("finetune")


def seed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the per-seed rows of an FLT summary, dropping its ``mean``/``sd``/empty rows.

    Args:
        frame: ``flt_summary.csv`` as read. A summary without a ``seed`` column (one retrain
            per fraction) is all per-seed rows.

    Returns:
        The rows whose ``seed`` is a finite number.
    """
    if "seed" not in frame.columns:
        return frame
    numeric = pd.to_numeric(frame["seed"], errors="coerce")
    return frame[numeric.notna() & ~numeric.isin([math.inf, -math.inf])]


def flatten(data: object, prefix: str = "") -> dict[str, Scalar]:
    """Flatten nested metrics to dotted keys (``test.spearman.ci_low``).

    Args:
        data: A parsed JSON document.
        prefix: Key prefix of ``data`` (used by the recursion).

    Returns:
        Dotted key -> leaf value; lists are kept as JSON text.
    """
    if isinstance(data, dict):
        flat: dict[str, Scalar] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(data, str | int | float | bool) or data is None:
        return {prefix.rstrip("."): data}
    return {prefix.rstrip("."): json.dumps(data)}


def _get(data: object, *keys: str) -> object:
    """``data[k1][k2]...`` or None when any level is not a dict or lacks the key."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _num(value: object) -> float | None:
    """A finite JSON number as float, anything else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def load_shipped(runs: Path, notes: list[str]) -> Shipped | None:
    """Find the scorer family the bundle ships, and the recorded reasons for it.

    The family is read from ``bundle/scorer.json`` (what ships), else from
    ``scorer/scorer.json`` (what the scorer stage chose); ``bundle/metrics.json`` adds the
    model run and the final ``why``.

    Args:
        runs: The runs folder.
        notes: List that collects a note per missing or unreadable file.

    Returns:
        The shipped scorer, or None when no file names its family.
    """
    family: str | None = None
    source = runs / FAMILY_SOURCES[0]
    for rel in FAMILY_SOURCES:
        path = runs / rel
        data = read_json_or_note(path, notes, "shipped scorer family")
        family = _text(_get(data, "family"))
        if family is not None:
            source = path
            break
        if data is not None:
            notes.append(f"{path}: 'family': expected a scorer family; not used")
    if family is None:
        return None
    metrics_path = runs / "bundle/metrics.json"
    bundle = read_json_or_note(metrics_path, notes, "shipped model and its reasons")
    return Shipped(
        family=family,
        source=source,
        model=_text(_get(bundle, "model")),
        why=_text(_get(bundle, "why")),
        scorer_reason=_text(_get(bundle, "scorer", "reason")),
    )


def summary_from_metrics(metrics: Mapping[str, object]) -> pd.DataFrame:
    """Rebuild the ``summary.csv`` layout from the evaluate stage's ``metrics.json`` keys.

    ``metrics.json`` holds a subset of the summary: ``test_<metric>`` for the shipped score,
    ``ref_<ranker>_<metric>`` for the references and ``shipped_minus_<ranker>_ranking_loss``
    for the paired differences, each with ``_ci_low``/``_ci_high``. Values are copied, not
    recomputed.

    Args:
        metrics: The parsed ``evaluate/metrics.json``.

    Returns:
        A frame with columns ``ranker, metric, value, ci_low, ci_high``.
    """
    prefixes = [("test_", "shipped"), *((f"ref_{r}_", r) for r in (*FAMILIES, "random"))]
    prefixes += [(f"shipped_minus_{r}_", f"shipped_minus_{r}") for r in (*FAMILIES, "random")]
    rows = []
    for key, value in metrics.items():
        if key.endswith(("_ci_low", "_ci_high")) or _num(value) is None:
            continue
        for prefix, ranker in prefixes:
            metric = key.removeprefix(prefix)
            if key.startswith(prefix) and metric in ("ranking_loss", *SPEARMAN_METRICS):
                rows.append(
                    {
                        "ranker": ranker,
                        "metric": metric,
                        "value": _num(value),
                        "ci_low": _num(metrics.get(f"{key}_ci_low")),
                        "ci_high": _num(metrics.get(f"{key}_ci_high")),
                    }
                )
    return pd.DataFrame(rows, columns=["ranker", "metric", "value", "ci_low", "ci_high"])


def load_test_comparison(runs: Path, notes: list[str]) -> TestComparison | None:
    """Read the evaluate stage's test-split comparison of the shipped scorer and references.

    ``evaluate/summary.csv`` (every ranker) is preferred; without it the subset in
    ``evaluate/metrics.json`` is used.

    Args:
        runs: The runs folder.
        notes: List that collects a note per missing or unreadable file.

    Returns:
        The comparison, or None when neither file has it.
    """
    metrics_path = runs / "evaluate/metrics.json"
    metrics = read_json_or_note(metrics_path, notes, "test split counts")
    metrics = metrics if isinstance(metrics, dict) else {}
    summary_path = runs / "evaluate/summary.csv"
    columns = ["ranker", "metric", "value", "ci_low", "ci_high"]
    summary = read_table(summary_path, columns, notes, "test comparison table")
    source = summary_path
    if summary is None and metrics:
        summary, source = summary_from_metrics(metrics), metrics_path
        if summary.empty:
            notes.append(f"{metrics_path}: no test_ranking_loss or ref_* keys; answer skipped")
    if summary is None or summary.empty:
        return None
    summary = summary.assign(
        ranker=summary["ranker"].astype(str),
        metric=summary["metric"].astype(str),
        **{c: pd.to_numeric(summary[c], errors="coerce") for c in columns[2:]},
    )
    n_targets, n_models = _num(metrics.get("test_n_targets")), _num(metrics.get("test_n_models"))
    return TestComparison(
        summary=summary[columns],
        source=source,
        n_targets=None if n_targets is None else int(n_targets),
        n_models=None if n_models is None else int(n_models),
        family=_text(metrics.get("shipped_family")),
    )


def fmt(value: float | None, spec: str = ".3f", sign: bool = False) -> str:
    """Format a number for the page: a dash for missing values, optional explicit sign.

    Args:
        value: The number.
        spec: Format spec without the sign flag.
        sign: Whether to prefix ``+`` to non-negative numbers.

    Returns:
        The text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = format(value, ("+" if sign else "") + spec)
    return text.replace("-", "−")  # a real minus sign: it lines up with the plus


def fmt_interval(
    value: float | None,
    low: float | None,
    high: float | None,
    spec: str = ".3f",
    sign: bool = False,
) -> str:
    """Format ``value [low, high]`` (or just the value when the interval is missing).

    Args:
        value: The estimate.
        low: Lower bound of its interval.
        high: Upper bound of its interval.
        spec: Format spec of each number.
        sign: Whether to prefix ``+`` to non-negative numbers.

    Returns:
        The text.
    """
    text = fmt(value, spec, sign)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return text
    return f"{text} [{fmt(low, spec, sign)}, {fmt(high, spec, sign)}]"


def _interval_pair(value: object) -> tuple[float | None, float | None]:
    if isinstance(value, list) and len(value) == 2:
        return _num(value[0]), _num(value[1])
    return None, None


def _short(reason: str | None) -> str | None:
    """The verdict part of a recorded reason (``not better beyond the noise: ...``)."""
    return None if reason is None else reason.split(":", 1)[0]


def _evidence_table(
    evidence: list[dict[str, object]],
    heading: str,
    caption: str,
    extra: bool = False,
    flag: str = "adopted",
) -> Table:
    """Candidate vs reference differences with their intervals, as the stage recorded them
    (``flag``: the recorded yes/no key shown, ``adopted`` or ``better_beyond_noise``)."""
    columns = ["candidate", heading, flag.replace("_", " "), "verdict"]
    if extra:
        columns.insert(2, "per-target Spearman difference [95 % CI]")
    rows = []
    for item in evidence:
        low, high = _interval_pair(item.get("ci"))
        cells: list[Scalar] = [
            _text(item.get("candidate")),
            fmt_interval(_num(item.get("mean_diff")), low, high, ".3g", sign=True),
            item.get(flag) if isinstance(item.get(flag), bool) else None,
            _short(_text(item.get("reason"))),
        ]
        if extra:
            rho = _get(item, "spearman_per_target_diff")
            rho_low, rho_high = _interval_pair(_get(rho, "ci"))
            cells.insert(
                2, fmt_interval(_num(_get(rho, "estimate")), rho_low, rho_high, ".3g", True)
            )
        rows.append(tuple(cells))
    return Table(tuple(columns), tuple(rows), caption)


def selection_decision(data: dict[str, object], source: Path) -> Decision:
    """The sweep selection: winner, reason and the variants' seed means it ranked.

    Args:
        data: The parsed ``selection/selection.json``.
        source: Its path.

    Returns:
        The decision.
    """
    metric = _text(data.get("ranking_metric")) or _text(data.get("primary_metric")) or "metric"
    direction = "lower is better" if data.get("direction") == "min" else "higher is better"
    rows = []
    for v in _dicts(data.get("variants")):
        members = v.get("members")
        rows.append(
            (
                _text(v.get("variant")),
                _num(v.get("n_seeds")),
                fmt_interval(_num(v.get("mean")), None, None, ".4g")
                + (f" ± {fmt(_num(v.get('sd')), '.3g')}" if _num(v.get("sd")) else ""),
                ", ".join(m for m in members if isinstance(m, str))
                if isinstance(members, list)
                else None,
            )
        )
    evidence = ()
    if rows:
        evidence = (
            Table(
                ("variant", "seeds", f"{metric}: seed mean ± sd", "members"),
                tuple(rows),
                f"Variants ranked by the mean of {metric} over their seeds ({direction}).",
            ),
        )
    return Decision(
        "selection",
        "Sweep selection",
        source,
        _text(data.get("reason")) or f"winner: {_text(data.get('winner'))}",
        evidence,
    )


def final_selection_decision(data: dict[str, object], source: Path) -> Decision:
    """The final selection: whether a fine-tune displaced the sweep winner, and the evidence.

    Args:
        data: The parsed ``final_selection/selection.json``.
        source: Its path.

    Returns:
        The decision.
    """
    evidence = _dicts(data.get("evidence"))
    first = evidence[0] if evidence else {}
    reference = _text(first.get("reference")) or _text(data.get("reference")) or "reference"
    per_target = _text(first.get("per_target")) or "per-target score"
    n = _num(first.get("n_targets"))
    caption = (
        f"Difference = candidate − {reference} on the {per_target}, mean over"
        f" {fmt(n, '.0f')} val targets with its 95 % bootstrap interval; negative favours the"
        " candidate."
    )
    tables = (
        (_evidence_table(evidence, f"difference vs {reference} [95 % CI]", caption),)
        if evidence
        else ()
    )
    return Decision(
        "final_selection",
        "Final selection: sweep winner vs fine-tunes",
        source,
        _text(data.get("reason")) or f"winner: {_text(data.get('winner'))}",
        tables,
    )


def flt_decision(data: dict[str, object], source: Path) -> Decision:
    """The FLT recommendation: the keep fraction chosen, its rule and each fraction's verdict.

    Args:
        data: The parsed ``flt_summary/recommendation.json``.
        source: Its path.

    Returns:
        The decision.
    """
    keep = _num(data.get("keep_fraction"))
    verdict = f"recommended keep fraction: {fmt(keep, 'g')}"
    qualifying = data.get("qualifying")
    if keep is not None and keep == _num(data.get("baseline_keep_fraction")):
        verdict += " (the unpruned baseline: no smaller fraction qualified)"
    elif isinstance(qualifying, list):
        verdict += f" (qualifying: {', '.join(fmt(_num(q), 'g') for q in qualifying)})"
    rule = _text(data.get("rule"))
    rows = []
    for f in _dicts(data.get("fractions")):
        loss = _get(f, "val_loss")
        rel, rho = _get(f, "rel_loss_increase"), _get(f, "target_spearman_diff")
        rel_low, rel_high = _interval_pair(_get(rel, "ci"))
        rho_low, rho_high = _interval_pair(_get(rho, "ci"))
        sd = _num(_get(loss, "sd"))
        rows.append(
            (
                fmt(_num(f.get("keep_fraction")), "g"),
                _num(f.get("groups_kept")),
                _num(f.get("n_seeds")),
                fmt(_num(_get(loss, "mean")), ".4f") + ("" if sd is None else f" ± {sd:.4f}"),
                fmt_interval(_num(_get(rel, "estimate")), rel_low, rel_high, ".3g", True),
                fmt_interval(_num(_get(rho, "estimate")), rho_low, rho_high, ".3g", True),
                _text(f.get("verdict")),
            )
        )
    tables = ()
    if rows:
        tables = (
            Table(
                (
                    "keep",
                    "groups kept",
                    "seeds",
                    "val loss, mean ± sd",
                    "relative val-loss change [95 % CI]",
                    "per-target Spearman change [95 % CI]",
                    "verdict",
                ),
                tuple(rows),
                f"Rule: {rule}" if rule else "",
            ),
        )
    return Decision("flt", "Feature pruning (FLT)", source, verdict, tables)


def scorer_decision(data: dict[str, object], source: Path) -> Decision:
    """The scorer choice out of fold: the family picked, the evidence and each candidate.

    Args:
        data: The parsed ``scorer/scorer.json``.
        source: Its path.

    Returns:
        The decision.
    """
    evidence = _dicts(data.get("evidence"))
    first = evidence[0] if evidence else {}
    reference = _text(first.get("reference")) or _text(data.get("family")) or "reference"
    per_target = _text(first.get("per_target")) or "ranking loss"
    n = _num(first.get("n_targets"))
    tables: list[Table] = []
    if evidence:
        caption = (
            f"Difference = candidate − {reference} in {per_target}, mean over {fmt(n, '.0f')}"
            " pooled targets (train + val, each predicted by a model that never saw it) with"
            " its 95 % paired bootstrap interval; negative favours the candidate."
        )
        tables.append(
            _evidence_table(
                evidence,
                f"{per_target} difference [95 % CI]",
                caption,
                extra=True,
                flag="better_beyond_noise",
            )
        )
    candidates = _get(data, "candidates")
    if isinstance(candidates, dict):
        metrics = (
            ("oof_ranking_loss", "out-of-fold ranking loss"),
            ("val_ranking_loss", "val ranking loss (in-sample)"),
            ("oof_spearman_per_target_mean", "out-of-fold Spearman, per-target mean"),
            ("oof_spearman_pooled", "out-of-fold Spearman, pooled"),
        )
        rows = [
            (name, *(fmt(_num(_get(values, key))) for key, _ in metrics))
            for name, values in candidates.items()
        ]
        tables.append(
            Table(
                ("family", *(label for _, label in metrics)),
                tuple(rows),
                "Each candidate out of fold (what the choice rests on) and on val, where the"
                " shipped models are in-sample: val chose the GNN's epoch, seed and fine-tune and"
                " the trees are refitted on it, so those numbers flatter (the test comparison is"
                " in the answer above).",
            )
        )
    requested = _text(data.get("requested"))
    verdict = _text(data.get("reason")) or f"family: {_text(data.get('family'))}"
    if requested and requested != "auto":
        verdict = f"{verdict} (requested: {requested})"
    return Decision("scorer", "Scorer choice: GNN, trees or blend", source, verdict, tuple(tables))


DECISION_READERS = {
    "selection": selection_decision,
    "final_selection": final_selection_decision,
    "flt": flt_decision,
    "scorer": scorer_decision,
}


def load_decisions(runs: Path, notes: list[str]) -> dict[str, Decision]:
    """Read the verdict every deciding stage recorded, in pipeline order.

    Args:
        runs: The runs folder.
        notes: List that collects a note per missing or unreadable verdict file.

    Returns:
        Decision key -> decision, for the stages whose verdict file could be read.
    """
    decisions: dict[str, Decision] = {}
    for key, title, rel, _ in DECISIONS:
        path = runs / rel
        data = read_json_or_note(path, notes, f"decision '{title}'")
        if isinstance(data, dict):
            decisions[key] = DECISION_READERS[key](data, path)
        elif data is not None:
            notes.append(f"{path}: expected a JSON object, got {type(data).__name__}; skipped")
    return decisions


def load_inputs(runs: str | Path) -> ReportInputs:
    """Read every table and verdict the report shows.

    Args:
        runs: The runs folder of a (possibly half-finished) pipeline.

    Returns:
        The inputs; what is missing or malformed is listed in ``notes``.

    Raises:
        FileNotFoundError: ``runs`` is not a folder.
    """
    runs = Path(runs)
    if not runs.is_dir():
        raise FileNotFoundError(f"{runs}: no such runs folder")
    inputs = ReportInputs(runs=runs)
    notes = inputs.notes
    inputs.shipped = load_shipped(runs, notes)
    inputs.test = load_test_comparison(runs, notes)
    inputs.decisions = load_decisions(runs, notes)
    for key, _, _, rel in DECISIONS:
        board = None if rel is None else read_table(runs / rel, [], notes, f"leaderboard {rel}")
        if board is not None:
            inputs.leaderboards[key] = board
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
    if inputs.flt is not None and "flt" in inputs.decisions:
        rec = read_json_or_note(
            runs / "flt_summary/recommendation.json", [], "recommended keep fraction marker"
        )
        inputs.flt_recommended = _num(_get(rec, "keep_fraction"))
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
    metric_files = sorted(runs.glob("*/metrics.json"), key=lambda p: natural_key(str(p)))
    for path in metric_files:
        data = read_json_or_note(path, notes, "its headline metrics")
        if isinstance(data, dict):
            inputs.headline[path.parent.name] = flatten(data)
        elif data is not None:
            notes.append(f"{path}: expected a JSON object, got {type(data).__name__}; skipped")
    if not metric_files:
        notes.append(f"{runs}: no */metrics.json; headline metrics skipped")
    return inputs


def target_column(frame: pd.DataFrame) -> str | None:
    """The column naming the target in a per-target table.

    Args:
        frame: A per-target table.

    Returns:
        ``TARGET`` or ``target``, or None when neither is present.
    """
    return next((c for c in ("TARGET", "target") if c in frame.columns), None)


def per_target_losses(frame: pd.DataFrame) -> pd.DataFrame:
    """Per test target, the ranking loss of the shipped scorer and of every reference.

    ``evaluate/per_target.csv`` holds the shipped score's columns unprefixed and each
    reference's as ``<ranker>_ranking_loss`` (``gnn``, ``trees``, ``blend``, ``random``); the
    references a run did not score are left out.

    Args:
        frame: ``evaluate/per_target.csv`` as read (with a target column).

    Returns:
        One row per target (index ``target``), one column per ranker in :data:`RANKERS`
        order, starting with ``shipped``.
    """
    target = target_column(frame)
    if target is None:
        raise ValueError(f"per-target table without a target column: {list(frame.columns)}")
    index = pd.Index(frame[target].astype(str), name="target")
    columns = {
        ranker: pd.to_numeric(frame[column], errors="coerce").to_numpy()
        for ranker in RANKERS
        if (column := "ranking_loss" if ranker == "shipped" else f"{ranker}_ranking_loss")
        in frame.columns
    }
    return pd.DataFrame(columns, index=index)


# --------------------------------------------------------------------------- figures


def png_bytes(fig: MplFigure) -> bytes:
    """Render a figure as PNG without the Software/date chunks (equal inputs, equal bytes).

    Args:
        fig: The figure.

    Returns:
        The PNG file's bytes.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _new_figure(height: float, ncols: int = 1) -> tuple[MplFigure, list[Axes]]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(FIG_WIDTH, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce")


def plot_val_curves(curves: dict[str, pd.DataFrame], notes: list[str]) -> bytes | None:
    """Draw every run's validation metrics per epoch, one panel per metric, overlaid.

    Args:
        curves: Run name -> its per-epoch metrics.
        notes: List that collects a note when a metric is in no run's table.

    Returns:
        PNG bytes, or None when no run has a drawable metric.
    """
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
    """Draw reliability diagrams, raw vs calibrated, one panel per split.

    Args:
        tables: Panel title -> reliability table (``mean_predicted``, ``mean_observed``).

    Returns:
        PNG bytes, or None without tables.
    """
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
    """Summarise one FLT metric per keep fraction over seeds.

    Args:
        frame: Per-seed rows of ``flt_summary.csv`` (see :func:`seed_rows`).
        column: The metric column.

    Returns:
        Index keep fraction (ascending); columns ``count``, ``mean`` and ``std`` (NaN with
        one seed).
    """
    values = pd.DataFrame(
        {"keep_fraction": _numeric(frame, "keep_fraction"), "value": _numeric(frame, column)}
    ).dropna()
    stats = values.groupby("keep_fraction")["value"].agg(["count", "mean", "std"])
    return stats.sort_index()


def plot_flt(frame: pd.DataFrame, recommended: float | None) -> bytes | None:
    """Draw validation metrics per keep fraction: every seed, mean ± sd, the unpruned band.

    Args:
        frame: Per-seed rows of ``flt_summary.csv``.
        recommended: The recommended keep fraction (dotted line), if known.

    Returns:
        PNG bytes, or None when there is nothing to draw.
    """
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


def per_target_series(losses: pd.DataFrame, family: str | None) -> list[tuple[str, str, str]]:
    """The bars of the per-target chart: one per ranker, the shipped one first.

    When the shipped score ranks exactly like its own family (same loss on every target, the
    usual case: calibration does not reorder models), the two are drawn as one series named
    after the family and marked as shipped, instead of two identical bars.

    Args:
        losses: Output of :func:`per_target_losses`.
        family: The shipped scorer's family, if known.

    Returns:
        (column of ``losses``, legend label, colour) per series, in drawing order.
    """
    series: list[tuple[str, str, str]] = []
    merged = (
        family in losses.columns
        and family != "shipped"
        and losses[family].equals(losses["shipped"])
    )
    if merged and family is not None:
        label = f"{RANKER_LABELS.get(family, family)} (shipped)"
        series.append((family, label, RANKER_COLOURS["shipped"]))
    else:
        label = "shipped" if family is None else f"shipped ({RANKER_LABELS.get(family, family)})"
        series.append(("shipped", label, RANKER_COLOURS["shipped"]))
    for ranker in RANKERS[1:]:
        if ranker in losses.columns and not (merged and ranker == family):
            series.append((ranker, RANKER_LABELS[ranker], RANKER_COLOURS[ranker]))
    return series


def draw_per_target(
    losses: pd.DataFrame,
    family: str | None = None,
    means: Mapping[str, float] | None = None,
) -> MplFigure | None:
    """Draw the test ranking loss per target, grouped bars for every ranker.

    Args:
        losses: Output of :func:`per_target_losses`.
        family: The shipped scorer's family, if known (names and merges its series).
        means: Ranker -> the mean test ranking loss the evaluate stage reported, shown in the
            legend; the shipped one is drawn as a dashed line.

    Returns:
        The figure, or None when no target has a shipped loss.
    """
    means = means or {}
    data = losses[losses["shipped"].notna()]
    if data.empty:
        return None
    order = pd.DataFrame({"loss": data["shipped"].to_numpy(), "target": data.index.to_numpy()})
    order = order.sort_values(["loss", "target"], ascending=[True, False], kind="mergesort")
    data = data.iloc[order.index.to_numpy()]  # worst at the top (barh draws from the bottom)
    series = per_target_series(data, family)
    k, n = len(series), len(data)
    height = min(1.6 + n * (0.13 * k + 0.12), 30.0)
    fig, (ax,) = _new_figure(height)
    y = np.arange(n, dtype=float)
    bar = 0.8 / k
    for i, (column, label, colour) in enumerate(series):
        pos = y + ((k - 1) / 2 - i) * bar
        mean = means.get("shipped" if i == 0 else column)
        text = label if mean is None else f"{label}: mean {mean:.3f}"
        values = data[column].to_numpy(float)
        ax.barh(pos, values, height=bar, color=colour, label=text)
        ax.scatter(values, pos, s=9, color=colour, zorder=3)  # a zero loss stays visible
    shipped_mean = means.get("shipped")
    if shipped_mean is not None:
        ax.axvline(shipped_mean, linestyle="--", color=RANKER_COLOURS["shipped"], linewidth=1)
    ax.set_yticks(y, list(data.index))
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(left=-0.01)  # the dots of zero losses stay clear of the axis
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("ranking loss (best DockQ − DockQ of the top-ranked model; lower is better)")
    ax.set_ylabel("test target")
    ax.set_title(f"Ranking loss per test target ({n} targets)")
    ax.tick_params(axis="y", labelsize=7)
    fig.legend(loc="outside upper center", ncols=min(k, 5), fontsize=8, frameon=False)
    return fig


def plot_per_target(
    frame: pd.DataFrame,
    family: str | None = None,
    means: Mapping[str, float] | None = None,
) -> bytes | None:
    """Render the per-target chart of ``evaluate/per_target.csv`` as PNG.

    Args:
        frame: ``evaluate/per_target.csv`` as read.
        family: The shipped scorer's family, if known.
        means: Ranker -> mean test ranking loss reported by the evaluate stage.

    Returns:
        PNG bytes, or None when there is nothing to draw.
    """
    if target_column(frame) is None:
        return None
    fig = draw_per_target(per_target_losses(frame), family, means)
    return None if fig is None else png_bytes(fig)


def shipped_family(inputs: ReportInputs) -> str | None:
    """The shipped scorer's family: from the bundle, else as the evaluate stage recorded it.

    Args:
        inputs: The loaded inputs.

    Returns:
        ``gnn``, ``trees``, ``blend``..., or None when no input names it.
    """
    if inputs.shipped is not None:
        return inputs.shipped.family
    return None if inputs.test is None else inputs.test.family


def ranker_value(
    test: TestComparison | None, ranker: str, metric: str
) -> tuple[float | None, float | None, float | None]:
    """One number of the evaluate stage's test comparison with its interval.

    Args:
        test: The comparison (None: nothing is known).
        ranker: ``shipped``, a family, ``random`` or ``shipped_minus_<ranker>``.
        metric: ``ranking_loss``, ``spearman_pooled``...

    Returns:
        (value, ci_low, ci_high); None for what the stage did not write.
    """
    if test is None:
        return None, None, None
    rows = test.summary[(test.summary["ranker"] == ranker) & (test.summary["metric"] == metric)]
    if rows.empty:
        return None, None, None
    row = rows.iloc[0]
    return tuple(None if pd.isna(row[c]) else float(row[c]) for c in ("value", "ci_low", "ci_high"))


def build_figures(inputs: ReportInputs) -> list[Figure]:
    """Draw every chart the inputs allow, in reading order, in a fixed style.

    Args:
        inputs: The loaded inputs.

    Returns:
        The figures that could be drawn.
    """
    import matplotlib as mpl
    import matplotlib.style

    means = {
        r: v for r in RANKERS if (v := ranker_value(inputs.test, r, "ranking_loss")[0]) is not None
    }
    figures: list[Figure] = []
    with mpl.rc_context():
        matplotlib.style.use("default")  # ignore the user's matplotlibrc: same bytes everywhere
        mpl.rcParams.update(STYLE)
        charts: list[tuple[str, str, bytes | None]] = [
            (
                "per_target",
                "Test ranking loss per target: every family beside the shipped scorer",
                None
                if inputs.per_target is None
                else plot_per_target(inputs.per_target, shipped_family(inputs), means),
            ),
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
        ]
    for key, title, png in charts:
        if png is not None:
            figures.append(Figure(key, title, png, CAPTIONS[key]))
    return figures


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1000px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; margin-top: 2.4rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 0.3rem; }
nav { font-size: 0.9rem; color: #555; } nav a { color: #2458a6; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 0.3rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; } td.num { white-space: nowrap; }
th { background: #f4f4f4; font-weight: 600; }
tr.shipped td { background: #fff3e0; font-weight: 600; }
.caption { font-size: 0.85rem; color: #555; margin: 0 0 1rem; }
.answer { background: #f5f9ff; border: 1px solid #c9dcf5; border-radius: 6px;
          padding: 0.2rem 1.2rem 0.8rem; margin-top: 1.2rem; }
.answer h2 { border: none; margin-top: 0.8rem; }
.lead { font-size: 1.05rem; }
.verdict { background: #f7f7f7; border-left: 4px solid #8a8a8a; padding: 0.4rem 0.8rem;
           margin: 0.3rem 0 0.6rem; }
.source { font-size: 0.8rem; color: #666; }
figure { margin: 1rem 0 2rem; } img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #444; margin-top: 0.4rem; }
details { margin: 0.4rem 0 1rem; } summary { cursor: pointer; color: #2458a6; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 1rem; }
.notes li { font-family: ui-monospace, monospace; font-size: 0.8rem; }
.scroll { overflow-x: auto; }
code { font-size: 0.9em; }
"""


def format_cell(value: object) -> str:
    """Table cell text: 4 significant digits for floats, a dash for missing values.

    Args:
        value: The cell value.

    Returns:
        The text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table; numeric columns are right-aligned and never wrap, text columns not.

    Args:
        columns: Column headings.
        rows: Rows of cell values.
        row_classes: Optional CSS class per row (``shipped`` highlights a row).

    Returns:
        The table inside a horizontally scrolling ``div``.
    """
    texts = [[format_cell(v) for v in row] for row in rows]
    numeric = []
    for j in range(len(columns)):
        cells = [(row[j], text[j]) for row, text in zip(rows, texts, strict=True) if j < len(row)]
        present = [(v, t) for v, t in cells if t != "–"]
        numeric.append(bool(present) and all(_is_number(v, t) for v, t in present))
    num = ' class="num"'
    head = "".join(
        f"<th{num if numeric[j] else ''}>{html.escape(str(c))}</th>" for j, c in enumerate(columns)
    )
    body = []
    for i, text in enumerate(texts):
        cls = row_classes[i] if row_classes and row_classes[i] else ""
        attr = f' class="{cls}"' if cls else ""
        tds = "".join(
            f"<td{num if numeric[j] else ''}>{html.escape(t)}</td>" for j, t in enumerate(text)
        )
        body.append(f"<tr{attr}>{tds}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _is_number(value: object, text: str) -> bool:
    """Whether a cell shows a number (an estimate with an interval or ± sd counts)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return bool(re.fullmatch(r"[−+\-]?[\d.]+(e[−+\-]?\d+)?( [\[±].*)?", text))


def _frame_rows(frame: pd.DataFrame) -> list[list[Scalar]]:
    return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _versus(diff: tuple[float | None, float | None, float | None], other: str) -> str | None:
    """Reading of a shipped − other ranking-loss difference and its interval."""
    value, low, high = diff
    if value is None:
        return None
    text = fmt_interval(value, low, high, sign=True)
    if high is not None and high < 0:
        return f"better than {other} beyond the noise ({text})"
    if low is not None and low > 0:
        return f"worse than {other} beyond the noise ({text})"
    if low is None or high is None:
        return f"{other}: difference {text}, no interval recorded"
    return f"no difference from {other} beyond the noise ({text}: the interval includes 0)"


def answer_section(inputs: ReportInputs) -> list[str]:
    """The answer first: the shipped scorer and how it ranks on the test split.

    Args:
        inputs: The loaded inputs.

    Returns:
        HTML fragments of the section.
    """
    family = shipped_family(inputs)
    test = inputs.test
    parts = ['<section class="answer" id="answer">']
    if family is None:
        parts.append("<h2>Answer: no shipped scorer found</h2>")
    else:
        name = RANKER_LABELS.get(family, family)
        parts.append(f"<h2>Answer: the shipped scorer is {html.escape(name)}</h2>")
    shipped = inputs.shipped
    if shipped is not None:
        model = f" on model <code>{html.escape(shipped.model)}</code>" if shipped.model else ""
        parts.append(
            f'<p class="source">Scorer family <code>{html.escape(shipped.family)}</code>{model},'
            f" read from <code>{html.escape(str(shipped.source))}</code>.</p>"
        )
    else:
        parts.append(
            "<p>No bundle or scorer stage output names the shipped family"
            f" ({', '.join(FAMILY_SOURCES)} missing).</p>"
        )
    if test is not None and family and test.family and test.family != family:
        parts.append(
            f'<p class="notes">The evaluate stage scored a <code>{html.escape(test.family)}</code>'
            f" scorer, not the shipped <code>{html.escape(family)}</code>: its test numbers are"
            " stale; rerun evaluate.</p>"
        )
    loss = ranker_value(test, "shipped", "ranking_loss")
    if test is None or loss[0] is None:
        parts.append(
            "<p>No test comparison: <code>evaluate/summary.csv</code> and"
            " <code>evaluate/metrics.json</code> are missing or hold no ranking loss (see the"
            " notes at the end).</p></section>"
        )
        return parts
    split = "the test split"
    if test.n_targets is not None:
        models = "" if test.n_models is None else f", {test.n_models} models"
        split = f"the test split ({test.n_targets} held-out targets{models})"
    spear = [(label, ranker_value(test, "shipped", m)) for m, label in SPEARMAN_PHRASES]
    spear_text = "; ".join(f"{label} {fmt_interval(*v)}" for label, v in spear if v[0] is not None)
    parts.append(
        f'<p class="lead">On {split}, the shipped scorer\'s mean per-target ranking loss is'
        f" <strong>{fmt_interval(*loss)}</strong> (95 % interval over targets; lower is"
        " better, 0 means it always put the target's best model first)"
        + (f"; {html.escape(spear_text)}" if spear_text else "")
        + ".</p>"
    )
    # the families and the random pick, ordered by their mean test ranking loss
    entries = []
    for ranker in (*FAMILIES, "random"):
        value = ranker_value(test, ranker, "ranking_loss")
        if value[0] is not None:
            entries.append((ranker, value))
    entries.sort(key=lambda e: (e[1][0], e[0]))
    families = [r for r, _ in entries if r != "random"]
    if family in families:
        parts.append(
            f"<p>Among the {len(families)} scorer families it ranks"
            f" <strong>{_ordinal(families.index(family) + 1)}</strong> by mean test ranking loss"
            " (table below, best first).</p>"
        )
    readings = [
        r
        for ranker, _ in entries
        if ranker != family
        and (
            r := _versus(
                ranker_value(test, f"shipped_minus_{ranker}", "ranking_loss"),
                RANKER_LABELS.get(ranker, ranker),
            )
        )
    ]
    if readings:
        items = "".join(f"<li>{html.escape(r)}</li>" for r in readings)
        parts.append(f"<p>Shipped − other, paired over the same test targets:</p><ul>{items}</ul>")
    columns = [
        "rank",
        "ranker",
        "ranking loss",
        "shipped − this",
        *(label for _, label in SPEARMAN_COLUMNS),
    ]
    rows, classes = [], []
    for i, (ranker, value) in enumerate(entries):
        label = RANKER_LABELS.get(ranker, ranker) + ("\u00a0(ships)" if ranker == family else "")
        diff = ranker_value(test, f"shipped_minus_{ranker}", "ranking_loss")
        rows.append(
            [
                i + 1 if ranker != "random" else "baseline",
                label,
                fmt_interval(*value),
                "–" if ranker == family else fmt_interval(*diff, sign=True),
                *(fmt_interval(*ranker_value(test, ranker, m)) for m, _ in SPEARMAN_COLUMNS),
            ]
        )
        classes.append("shipped" if ranker == family else "")
    if rows:
        parts.append(html_table(columns, rows, classes))
        parts.append(
            f'<p class="caption">Test split, as written by the evaluate stage'
            f" (<code>{html.escape(str(test.source))}</code>). Each cell: mean over test"
            " targets [95 % bootstrap interval over targets]. Ranking loss: lower is better;"
            " Spearman: higher is better. The random pick is the expected value of choosing a"
            " target's model at random (a floor, not a candidate).</p>"
        )
    if shipped is not None and shipped.why:
        parts.append(f"<p><strong>Why this model.</strong> {html.escape(shipped.why)}</p>")
    if shipped is not None and shipped.scorer_reason:
        parts.append(
            f"<p><strong>Why this family.</strong> {html.escape(shipped.scorer_reason)}"
            " (decided on validation targets; see the scorer choice below)</p>"
        )
    parts.append("</section>")
    return parts


def decisions_section(inputs: ReportInputs) -> list[str]:
    """The decisions in pipeline order, each with its recorded verdict and evidence.

    Args:
        inputs: The loaded inputs.

    Returns:
        HTML fragments of the section.
    """
    parts = ['<h2 id="decisions">Decisions and their evidence</h2>']
    for key, title, rel, board_rel in DECISIONS:
        decision = inputs.decisions.get(key)
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if decision is None:
            parts.append(f"<p>No verdict recorded (<code>{html.escape(rel)}</code> missing).</p>")
        else:
            parts.append(f'<p class="verdict">{html.escape(decision.verdict)}</p>')
            for table in decision.evidence:
                parts.append(html_table(table.columns, table.rows))
                if table.caption:
                    parts.append(f'<p class="caption">{html.escape(table.caption)}</p>')
            parts.append(
                f'<p class="source">From <code>{html.escape(str(decision.source))}</code>.</p>'
            )
        board = inputs.leaderboards.get(key)
        if board is not None and board_rel is not None:
            parts.append(
                f"<details><summary>Full leaderboard ({len(board)} rows,"
                f" <code>{html.escape(board_rel)}</code>)</summary>"
                + html_table(list(board.columns), _frame_rows(board))
                + "</details>"
            )
    return parts


def per_target_html(inputs: ReportInputs) -> str | None:
    """The per-target chart's numbers as a collapsed table (one column per ranker).

    Args:
        inputs: The loaded inputs.

    Returns:
        HTML, or None without a per-target table.
    """
    if inputs.per_target is None:
        return None
    losses = per_target_losses(inputs.per_target)
    family = shipped_family(inputs)
    headings = [
        f"{RANKER_LABELS.get(c, c)}" + (f" ({family})" if c == "shipped" and family else "")
        for c in losses.columns
    ]
    rows = [
        [target, *(fmt(float(v)) for v in values)]
        for target, values in zip(losses.index, losses.to_numpy(), strict=True)
    ]
    return (
        "<details><summary>Per-target ranking loss as a table</summary>"
        + html_table(["target", *headings], rows)
        + "</details>"
    )


def render_html(inputs: ReportInputs, figures: Sequence[Figure]) -> str:
    """Lay out one self-contained page: inline CSS, figures as data URIs, no script.

    Args:
        inputs: The loaded inputs.
        figures: The figures from :func:`build_figures`.

    Returns:
        The HTML text.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>graphqa report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>graphqa results</h1>",
        f'<p class="source">Read from <code>{html.escape(str(inputs.runs))}</code>. Every number'
        " below is copied from the pipeline's outputs; nothing is recomputed."
        + (
            f" {len(inputs.notes)} input(s) were missing or unreadable:"
            ' <a href="#notes">listed at the end</a>.'
            if inputs.notes
            else ""
        )
        + "</p>",
        '<nav><a href="#answer">Answer</a> · <a href="#decisions">Decisions</a> ·'
        ' <a href="#charts">Charts</a> ·'
        + (' <a href="#notes">Notes</a> ·' if inputs.notes else "")
        + ' <a href="#all-values">All values</a></nav>',
    ]
    parts += answer_section(inputs)
    parts += decisions_section(inputs)
    parts.append('<h2 id="charts">Charts</h2>')
    if not figures:
        parts.append("<p>No chart could be drawn from the inputs.</p>")
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        extra = per_target_html(inputs) if fig.key == "per_target" else None
        parts.append(
            f'<figure id="{fig.key}"><h3>{html.escape(fig.title)}</h3>'
            f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><strong>What to look for.</strong> {html.escape(fig.caption)}"
            "</figcaption>" + (extra or "") + "</figure>"
        )
    if inputs.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in inputs.notes)
        parts.append(
            '<h2 id="notes">Not shown</h2>'
            f'<div class="notes"><p>Missing or unreadable inputs:</p><ul>{items}</ul></div>'
        )
    parts.append('<h2 id="all-values">All values</h2>')
    if inputs.headline:
        n = sum(len(m) for m in inputs.headline.values())
        parts.append(
            f"<details><summary>All bundle values: every <code>*/metrics.json</code> key"
            f" ({n} values from {len(inputs.headline)} stages)</summary>"
        )
        for stage, metrics in inputs.headline.items():
            parts.append(f"<h3>{html.escape(stage)}/metrics.json</h3>")
            parts.append(html_table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
        parts.append("</details>")
    else:
        parts.append("<p>No metrics.json found.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- writing


def write_report(runs: str | Path = "runs", out: str | Path = "report") -> ReportResult:
    """Write ``<out>/<chart>.png`` and ``<out>/report.html``, swapping the folder in whole.

    ``out`` is replaced as a unit, so it must be a new folder or an earlier report: anything
    else (say ``--out runs``) is refused rather than deleted.

    Args:
        runs: The runs folder to read.
        out: The report folder to (re)place.

    Returns:
        The folder, the files written (the page last) and the notes on skipped inputs.

    Raises:
        ValueError: ``out`` exists and is not an earlier report.
        FileNotFoundError: ``runs`` is not a folder.
    """
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
