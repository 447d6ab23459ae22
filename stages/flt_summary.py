"""Stage `flt_summary`: per keep fraction mean ± sd over seeds, the paired verdict against the
unpruned retrain (bootstrap over val targets) and the recommended mask."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.flt import summarise
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--flt-dir", default="runs/flt")
    parser.add_argument("--retrain-root", default="runs/flt_retrain")
    parser.add_argument("--schema-dir", default="data/schema")
    parser.add_argument("--out", default="runs/flt_summary")
    args = parser.parse_args()
    summarise(
        params=load_params(args.params),
        flt_dir=args.flt_dir,
        retrain_root=args.retrain_root,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "flt_summary")
