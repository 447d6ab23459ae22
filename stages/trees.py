"""Stage `trees`: LightGBM recipes on pooled graph features, chosen out of fold -> runs/trees/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.stage import run_stage
from graphqa.trees import trees_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    summary = trees_stage(params=params, schema_dir=args.schema_dir, out_dir=args.out)
    print(f"trees: {args.out}: ships {summary['reason']}")


if __name__ == "__main__":
    run_stage(main, "trees")
