"""Stage `flt`: score feature groups of the final model and write one mask per keep fraction."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.flt import flt_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    flt_stage(
        params=load_params(args.params),
        schema_dir=args.schema_dir,
        model_path=args.model,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "flt")
