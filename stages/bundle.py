"""Stage `bundle`: package the final model, calibration and provenance -> runs/bundle/."""

from __future__ import annotations

import argparse

from graphqa.bundle import bundle_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--calibration-dir", required=True)
    parser.add_argument("--trees-dir", required=True)
    parser.add_argument("--scorer-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    manifest = bundle_stage(
        model_dir=args.model_dir,
        calibration_dir=args.calibration_dir,
        out_dir=args.out,
        trees_dir=args.trees_dir,
        scorer_dir=args.scorer_dir,
    )
    print(f"bundle: {args.out} with {len(manifest['files'])} verified files")


if __name__ == "__main__":
    run_stage(main, "bundle")
