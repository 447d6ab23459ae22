"""``graphqa`` command line: config, run summaries, the leaderboard, monitoring and resume."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from graphqa.config import ConfigError, load_params, parse_override


def _config(args: argparse.Namespace) -> int:
    overrides = dict(parse_override(o) for o in args.override)
    params = load_params(args.params, overrides)
    data = params.to_dict()
    if args.section:
        data = {args.section: data[args.section]}
    for section, values in data.items():
        print(f"{section}:")
        for key, value in (values or {}).items():
            print(f"  {key}: {json.dumps(value)}")
    return 0


def summarise_run(run_dir: str | Path) -> dict[str, Any]:
    """Best selection score, epoch, checkpoint and resolved schema of a training run."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path}: no summary.json (is this a finished run?)")
    summary = json.loads(summary_path.read_text())
    checkpoint = run_dir / summary["checkpoint"]
    return {
        "run_dir": str(run_dir),
        "best_selection_metric": summary["best_selection_metric"],
        "best_epoch": summary["best_epoch"],
        "checkpoint": str(checkpoint),
        "checkpoint_file": checkpoint.resolve().name if checkpoint.exists() else None,
        "metrics": summary["metrics"],
        "schema": summary["schema"],
    }


def _summarise(args: argparse.Namespace) -> int:
    print(json.dumps(summarise_run(args.run_dir), indent=2))
    return 0


def pipeline_runs(runs_root: str | Path) -> dict[str, Path]:
    """Every training run folder of the pipeline: sweep members and fine-tuned runs."""
    root = Path(runs_root)
    found = {f"train/{d.name}": d for d in sorted((root / "train").glob("*")) if d.is_dir()}
    if (root / "finetune_phase1").is_dir():
        found["finetune_phase1"] = root / "finetune_phase1"
    found.update(
        {
            f"finetune_phase2/{d.name}": d
            for d in sorted((root / "finetune_phase2").glob("*"))
            if d.is_dir()
        }
    )
    return found


def leaderboard_rows(
    runs_root: str | Path, metric: str, limit: int | None = None
) -> list[dict[str, Any]]:
    from graphqa.select import HEADLINE, load_candidate, rank

    candidates = [
        c
        for name, d in pipeline_runs(runs_root).items()
        if (c := load_candidate(d, name)) is not None
    ]
    rows = []
    for i, cand in enumerate(rank(candidates, metric)[:limit], 1):
        row: dict[str, Any] = {"rank": i, "run": cand.name}
        row.update({m: cand.value(m) for m in dict.fromkeys([metric, *HEADLINE])})
        row.update({"lr": cand.params.get("learning_rate"), "seed": cand.params.get("seed")})
        rows.append(row)
    return rows


def _format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no finished runs)"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(cell(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _leaderboard(args: argparse.Namespace) -> int:
    metric = args.metric or load_params(args.params).selection.primary_metric
    rows = leaderboard_rows(args.runs, metric, args.limit)
    print(json.dumps(rows, indent=2) if args.json else _format_table(rows))
    return 0


def monitor_snapshot(run_dir: str | Path) -> dict[str, Any]:
    """Current best checkpoint of a (possibly still training) run and what produced it."""
    run_dir = Path(run_dir)
    metrics_csv = run_dir / "metrics.csv"
    summary = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").exists()
        else {}
    )
    rows = list(csv.DictReader(metrics_csv.open())) if metrics_csv.exists() else []
    snapshot: dict[str, Any] = {
        "run_dir": str(run_dir),
        "status": summary.get("status", "unknown"),
        "epochs_done": len(rows),
    }
    scored = [r for r in rows if r.get("selection_metric") not in (None, "", "nan")]
    if scored:
        best = min(scored, key=lambda r: (float(r["selection_metric"]), int(r["epoch"])))
        ckpt = run_dir / "checkpoints" / f"epoch{int(best['epoch']):03d}.ckpt"
        snapshot.update(
            {
                "best_epoch": int(best["epoch"]),
                "best_selection_metric": float(best["selection_metric"]),
                "best_val_loss": float(best["val_loss"]),
                "best_val_spearman": _float(best.get("val_spearman")),
                "checkpoint": str(ckpt.resolve()) if ckpt.exists() else None,
                "current_lr": _float(rows[-1].get("lr")),
            }
        )
    params = summary.get("params", {})
    snapshot["learning"] = {
        key: params.get(key)
        for key in ("optimizer", "scheduler", "early_stopping")
        if key in params
    }
    snapshot["learning"]["seed"] = summary.get("seed")
    return snapshot


def _float(value: str | None) -> float | None:
    try:
        result = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return None if result is None or math.isnan(result) else result


def _monitor(args: argparse.Namespace) -> int:
    last = None
    while True:
        snap = monitor_snapshot(args.run_dir)
        if snap != last:
            print(json.dumps(snap, indent=2), flush=True)
            last = snap
        if not args.follow or snap["status"] == "finished":
            return 0
        time.sleep(args.interval)


def _resume(args: argparse.Namespace) -> int:
    from graphqa.train import resume_run

    summary = resume_run(args.run_dir)
    print(
        json.dumps(
            {
                "best_selection_metric": summary.get("best_selection_metric"),
                "best_epoch": summary.get("best_epoch"),
                "checkpoint": summary.get("checkpoint"),
            },
            indent=2,
        )
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from graphqa.predict import predict_with_bundle

    frame, report = predict_with_bundle(args.bundle, args.graphs, args.labels, args.batch_size)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False, float_format="%.6f")
    else:
        print(frame.to_csv(index=False, float_format="%.6f"), end="")
    summary = {k: v for k, v in report.items() if k != "per_target"}
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphqa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="print the resolved, validated params")
    cfg.add_argument("--params", default="params.yaml")
    cfg.add_argument("--section", help="only this section")
    cfg.add_argument(
        "--override",
        "-S",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. optimizer.learning_rate=1e-3",
    )
    cfg.set_defaults(func=_config)
    summ = sub.add_parser("summarise", help="JSON summary of a training run folder")
    summ.add_argument("run_dir")
    summ.set_defaults(func=_summarise)
    board = sub.add_parser("leaderboard", help="rank the pipeline's finished training runs")
    board.add_argument("--limit", type=int, default=None)
    board.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    board.add_argument("--params", default="params.yaml")
    board.add_argument(
        "--metric", default=None, help="rank by this metric (default: selection.primary_metric)"
    )
    board.add_argument("--json", action="store_true")
    board.set_defaults(func=_leaderboard)
    mon = sub.add_parser("monitor", help="current best checkpoint of a run (--follow: live)")
    mon.add_argument("run_dir")
    mon.add_argument("--follow", action="store_true")
    mon.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    mon.set_defaults(func=_monitor)
    res = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    res.add_argument("run_dir")
    res.set_defaults(func=_resume)
    pred = sub.add_parser("predict", help="score a folder of graphs with a bundle")
    pred.add_argument("--bundle", required=True, help="bundle folder (runs/bundle)")
    pred.add_argument("--graphs", required=True, help="graph folder in the graphqa contract")
    pred.add_argument("--labels", help="label CSV: score only these models and report metrics")
    pred.add_argument("--out", help="output CSV (default: stdout)")
    pred.add_argument("--batch-size", type=int, default=64)
    pred.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:  # incl. DataContractError
        print(f"graphqa: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
