"""Stage `scorer`: choose the shipped family (GNN, trees or blend) out of fold -> runs/scorer/."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.scorer import scorer_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--trees-dir", required=True)
    parser.add_argument("--cv-root", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    scorer_stage(
        family=params.model.family,
        fold_ids=params.cv.fold_ids,
        cv_root=args.cv_root,
        model_dir=args.model_dir,
        trees_dir=args.trees_dir,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "scorer")
