"""Stage `evaluate`: score the test split with the bundle, beside every candidate family (its
val, out-of-fold and test ranking loss) and a random pick -> runs/evaluate/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.evaluate import evaluate_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--scorer", required=True, help="stage scorer's scorer.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = params.evaluate
    evaluate_stage(
        bundle_dir=args.bundle,
        graph_dir=params.paths.graph_dir,
        labels_csv=params.paths.test_labels,
        out_dir=args.out,
        schema_dir=args.schema_dir,
        batch_size=evaluate.batch_size,
        bins=params.calibration.reliability_bins,
        # optional params keys (module defaults until params.yaml carries them)
        n_resamples=evaluate.bootstrap_resamples,
        seed=evaluate.bootstrap_seed,
        scorer_record=args.scorer,
    )


if __name__ == "__main__":
    run_stage(main, "evaluate")
