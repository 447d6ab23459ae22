"""Stage `evaluate`: score the test split with the bundle -> runs/evaluate/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.predict import evaluate_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--bundle", default="runs/bundle")
    parser.add_argument("--out", default="runs/evaluate")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate_bundle(
        bundle_dir=args.bundle,
        graph_dir=params.paths.graph_dir,
        labels_csv=params.paths.test_labels,
        out_dir=args.out,
        batch_size=params.evaluate.batch_size,
        bins=params.calibration.reliability_bins,
    )


if __name__ == "__main__":
    main()
