"""Stage `calibration`: calibrate the final model on val_calib -> runs/calibration/."""

from __future__ import annotations

import argparse

from graphqa.calibration import calibration_stage
from graphqa.config import load_params
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--scorer", required=True)
    parser.add_argument("--trees-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    calibration_stage(
        cfg=load_params(args.params).calibration,
        model_path=args.model,
        schema_dir=args.schema_dir,
        out_dir=args.out,
        scorer_path=args.scorer,
        trees_dir=args.trees_dir,
    )


if __name__ == "__main__":
    run_stage(main, "calibration")
