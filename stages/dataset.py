"""Stage `dataset`: write the embedded default dataset to data/dataset/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.dataset import dataset_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    truth = dataset_stage(cfg=params.dataset, out_dir=args.out)
    print(
        f"dataset: wrote {sum(s['graphs'] for s in truth['splits'].values())} graphs to "
        f"{args.out}; best achievable Spearman {truth['best_achievable_spearman']}"
    )


if __name__ == "__main__":
    run_stage(main, "dataset")
