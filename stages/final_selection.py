"""Stage `final_selection`: the sweep winner vs every fine-tuned run -> runs/final_selection/.

A fine-tune replaces the sweep winner only if it beats it beyond the noise: per-target
differences on val with a bootstrap interval over targets (see graphqa.final_selection)."""

from __future__ import annotations

import argparse
from pathlib import Path

from graphqa.config import load_params
from graphqa.final_selection import final_selection_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--selection-dir", required=True)
    parser.add_argument("--phase1-dir", required=True)
    parser.add_argument("--phase2-root", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    finetune_dirs = {"finetune_phase1": Path(args.phase1_dir)}
    finetune_dirs.update(
        {
            f"finetune_phase2/{seed}": Path(args.phase2_root) / str(seed)
            for seed in params.finetune.phase2.seeds
        }
    )
    final_selection_stage(
        params=params,
        selection_dir=args.selection_dir,
        finetune_dirs=finetune_dirs,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "final_selection")
