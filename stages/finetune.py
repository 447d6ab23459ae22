"""Stages `finetune_phase1` and `finetune_phase2@<seed>`: resume a selected checkpoint."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.finetune import finetune_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--phase", type=int, choices=(1, 2), required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--selection-dir", required=True)
    parser.add_argument("--phase1-dir", default=None, help="phase 2: phase 1's run folder")
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    finetune_stage(
        params=load_params(args.params),
        phase=args.phase,
        seed=args.seed,
        selection_dir=args.selection_dir,
        phase1_dir=args.phase1_dir,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "finetune")
