"""Stage `final_model`: the model calibration, bundle and evaluation use -> runs/final_model/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.final_model import final_model_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--final-selection-dir", required=True)
    parser.add_argument("--recommendation", required=True)
    parser.add_argument("--retrain-root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    final_model_stage(
        adopt_flt=load_params(args.params).flt.adopt,
        final_selection_dir=args.final_selection_dir,
        recommendation_path=args.recommendation,
        retrain_root=args.retrain_root,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "final_model")
