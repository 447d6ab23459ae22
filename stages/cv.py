"""Stage `cv@<fold>`: the GNN recipe trained without one fold, predicting it -> runs/cv/<fold>/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.cv import cv_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    summary = cv_stage(params=params, fold=args.fold, schema_dir=args.schema_dir, out_dir=args.out)
    print(
        f"cv: {args.out}: fold {summary['fold']} held {summary['n_graphs']['held']} graphs, "
        f"best epoch {summary['best_epoch']} of {summary['epochs_trained']} "
        f"({summary['checkpoint']})"
    )


if __name__ == "__main__":
    run_stage(main, "cv")
