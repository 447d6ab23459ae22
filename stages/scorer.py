"""Stage `scorer`: choose the shipped family (GNN, trees or blend) on val -> runs/scorer/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.scorer import select_scorer
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model-dir", default="runs/final_model")
    parser.add_argument("--trees-dir", default="runs/trees")
    parser.add_argument("--schema-dir", default="data/schema")
    parser.add_argument("--out", default="runs/scorer")
    args = parser.parse_args()
    select_scorer(
        family=load_params(args.params).model.family,
        model_dir=args.model_dir,
        trees_dir=args.trees_dir,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "scorer")
