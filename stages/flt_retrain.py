"""Stage `flt_retrain@<keep>-<seed>`: retrain the sweep winner's recipe on one FLT mask."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.flt_retrain import flt_retrain_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--keep", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True, help="dataloader.seed of the retrain")
    parser.add_argument("--flt-dir", required=True)
    parser.add_argument("--selection-dir", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    flt_retrain_stage(
        params=load_params(args.params),
        keep_frac=args.keep,
        seed=args.seed,
        flt_dir=args.flt_dir,
        selection_dir=args.selection_dir,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "flt_retrain")
