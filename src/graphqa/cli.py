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

# Subcommands import their heavy modules (torch, Lightning, PyG) inside their handlers: `graphqa
# --help` and the config commands start in 0.4 s instead of ~5-10 s (measured 2026-12-04).
from graphqa.config import ConfigError, load_params, parse_override
from graphqa.layout import SUMMARY, RunPaths


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


def _config_import(args: argparse.Namespace) -> int:
    from graphqa.config_import import import_config

    report = import_config(
        args.old,
        manifest=args.manifest,
        out=args.out,
        keep_paths=args.keep_paths,
        dry_run=args.dry_run,
    )
    print("\n".join(report.lines()))
    return 0


def summarise_run(run_dir: str | Path) -> dict[str, Any]:
    """Best selection score, epoch, checkpoint and resolved schema of a training run."""
    run_dir = Path(run_dir)
    summary_path = RunPaths(run_dir).summary
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path}: no {SUMMARY} (is this a finished run?)")
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
    """The rows ``graphqa leaderboard`` prints: every finished pipeline run, best first.

    Args:
        runs_root: the folder holding ``train/``, ``finetune_phase1`` and ``finetune_phase2/``.
        metric: the metric to rank by (a key of ``graphqa.selection.DIRECTIONS``).
        limit: keep only the best ``limit`` runs (``None``: all).

    Returns:
        One dict per run: ``rank``, ``run``, the ranking metric and the headline metrics
        (``None`` where missing), ``lr`` and ``seed``.

    Raises:
        ValueError: ``metric`` is not a known metric.
    """
    from graphqa.selection import HEADLINE, load_candidate, rank

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
    paths = RunPaths(run_dir)
    metrics_csv = paths.metrics_csv
    summary = json.loads(paths.summary.read_text()) if paths.summary.exists() else {}
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


def _report(args: argparse.Namespace) -> int:
    from graphqa.report import write_report

    result = write_report(args.runs, args.out)
    for note in result.notes:
        print(f"graphqa report: note: {note}", file=sys.stderr)
    print("\n".join(str(p) for p in result.files))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from graphqa.predict import default_readers, predict_with_bundle

    readers, threads = default_readers()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        frame, report = predict_with_bundle(
            args.bundle,
            args.graphs,
            args.labels,
            args.batch_size,
            compile=args.compile,
            workers=readers if args.workers is None else args.workers,
        )
    finally:  # `main` is also called in-process (tests, notebooks)
        torch.set_num_threads(previous_threads)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False, float_format="%.6f")
    else:
        print(frame.to_csv(index=False, float_format="%.6f"), end="")
    summary = {k: v for k, v in report.items() if k != "per_target"}
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``graphqa`` command line: one sub-command per tool, each bound to its handler.

    Returns:
        The parser; ``args.func(args)`` runs the chosen sub-command.
    """
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
    cfg_actions = cfg.add_subparsers(dest="config_action", metavar="{import}")
    imp = cfg_actions.add_parser(
        "import",
        help="convert a training-stack config (structured or legacy flat) into params.yaml",
    )
    imp.add_argument("old", metavar="OLD.yaml", help="the training stack's config file")
    imp.add_argument(
        "--manifest", metavar="SWEEP.yaml", help="its sweep manifest -> sweep.seeds/variants"
    )
    imp.add_argument(
        "-o", "--out", default="params.yaml", help="params file to update (default: params.yaml)"
    )
    imp.add_argument(
        "--keep-paths", action="store_true", help="leave the current paths.* untouched"
    )
    imp.add_argument("--dry-run", action="store_true", help="print the mapping, write nothing")
    imp.set_defaults(func=_config_import)
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
    pred.add_argument(  # = graphqa.predict.PREDICT_BATCH_SIZE; literal so --help skips torch
        "--batch-size", type=_positive_int, default=32, help="graphs per batch (default 32)"
    )
    pred.add_argument(
        "--compile", action="store_true", help="torch.compile the network (large folders)"
    )
    pred.add_argument(
        "--workers",
        type=_non_negative_int,
        help="reader processes (default: half the cores; 0 reads in this process)",
    )
    pred.add_argument(
        "--threads", type=_positive_int, help="network threads (default: the cores left over)"
    )
    pred.set_defaults(func=_predict)
    rep = sub.add_parser(
        "report", help="PNG figures + one offline report.html of the pipeline's results"
    )
    rep.add_argument("--runs", default="runs", help="runs folder (default: runs)")
    rep.add_argument("--out", default="report", help="output folder (default: report)")
    rep.set_defaults(func=_report)
    _add_builder_commands(sub)
    _add_sweep_command(sub)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from graphqa.manifest import check_folder, format_report
    from graphqa.schema import schema_checker

    report = check_folder(
        args.graph_dir,
        args.manifest,
        write=args.write_manifest,
        ignore_metadata=args.ignore_metadata,
        workers=args.workers,
        check=schema_checker(args.graph_dir),
        progress=sys.stderr,
    )
    for line in format_report(report, write=args.write_manifest):
        print(line, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _check_graphs(args: argparse.Namespace) -> int:
    from graphqa.builder_check import check_build

    graph_dir, checks = check_build(args.build_dir)
    print(f"graph folder: {graph_dir}")
    for check in checks:
        print(check.line())
    return 1 if any(c.failed for c in checks) else 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_builder_commands(sub: Any) -> None:
    """Tools the graph builder's users rely on: its validator and the sidecar check."""
    val = sub.add_parser(
        "validate", help="verify a graph folder against its manifest (or write the manifest)"
    )
    val.add_argument("graph_dir")
    val.add_argument("--manifest", help="manifest file (default: GRAPH_DIR/graph_manifest.json)")
    val.add_argument("--write-manifest", action="store_true", help="hash the graphs and write it")
    val.add_argument(
        "--ignore-metadata", action="store_true", help="skip (or, writing, omit) metadata digests"
    )
    val.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    val.set_defaults(func=_validate)
    chk = sub.add_parser("check-graphs", help="[OK]/[MISSING]/[INVALID] per builder sidecar")
    chk.add_argument("build_dir", help="the builder's output dir or its graph_data folder")
    chk.set_defaults(func=_check_graphs)


def _sweep(args: argparse.Namespace) -> int:
    from graphqa import sweep

    if args.collect:
        if not args.remote:
            raise ValueError("graphqa sweep --collect: --remote NAME is required")
        return sweep.collect(args.group, args.remote)
    if args.shard:
        if not args.remote:
            raise ValueError("graphqa sweep --shard: --remote NAME is required")
        return sweep.run_shard(args.group, args.shard, args.remote)
    return sweep.run_local(args.group, args.jobs, dry_run=args.dry_run)


def _add_sweep_command(sub: Any) -> None:
    """Parallel sweeps: N local worktrees sharing the DVC cache, or one scheduler shard."""
    from graphqa.sweep import GROUPS

    swp = sub.add_parser(
        "sweep",
        help="train a matrix group's members in parallel (local worktrees or scheduler shards)",
    )
    swp.add_argument("--group", choices=GROUPS, default="train", help="matrix stage (train)")
    mode = swp.add_mutually_exclusive_group()
    mode.add_argument(
        "--jobs", type=_positive_int, default=2, help="local workers at once (default 2)"
    )
    mode.add_argument("--shard", metavar="I/N", help="run shard I of N (0-based) in this clone")
    mode.add_argument(
        "--collect", action="store_true", help="pull the run-cache from --remote and restore"
    )
    swp.add_argument("--remote", metavar="NAME", help="DVC remote for --shard/--collect")
    swp.add_argument("--dry-run", action="store_true", help="--jobs: print the shards, run nothing")
    swp.set_defaults(func=_sweep)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``graphqa`` script: run one sub-command, report user errors briefly.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit code: the sub-command's, or 2 after a config, missing-file or value error.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:  # incl. DataContractError
        print(f"graphqa: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
