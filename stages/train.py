"""Stage `train`: one sweep member (seed x variant) -> runs/train/<seed>-<variant>/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.stage import run_stage
from graphqa.train import train_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--variant", default="base")
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    base = load_params(args.params)
    if args.variant not in base.sweep.variants:
        parser.error(
            f"unknown variant '{args.variant}'; params.yaml sweep.variants has "
            f"{sorted(base.sweep.variants)}"
        )
    overrides = {**base.sweep.variants[args.variant], "dataloader.seed": args.seed}
    params = load_params(args.params, overrides=overrides)
    summary = train_stage(
        params=params,
        schema_dir=args.schema_dir,
        run_dir=args.out,
        run_name=f"{args.seed}-{args.variant}",
    )
    if summary:  # empty on non-zero ranks of a multi-process run
        print(
            f"train: {args.out}: best selection_metric {summary['best_selection_metric']} "
            f"at epoch {summary['best_epoch']}"
        )


if __name__ == "__main__":
    run_stage(main, "train")
