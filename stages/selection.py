"""Stage `selection`: rank the sweep members -> runs/selection/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.select import select_sweep
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train-root", default="runs/train")
    parser.add_argument("--out", default="runs/selection")
    args = parser.parse_args()
    select_sweep(params=load_params(args.params), train_root=args.train_root, out_dir=args.out)


if __name__ == "__main__":
    run_stage(main, "selection")
