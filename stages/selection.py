"""Stage `selection`: rank the sweep members -> runs/selection/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.selection import selection_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train-root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    selection_stage(params=load_params(args.params), train_root=args.train_root, out_dir=args.out)


if __name__ == "__main__":
    run_stage(main, "selection")
