"""Stage `flt_summary`: per keep fraction mean ± sd over seeds, the paired verdict against the
unpruned retrain (bootstrap over val targets) and the recommended mask."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.flt_summary import flt_summary_stage
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--flt-dir", required=True)
    parser.add_argument("--retrain-root", required=True)
    parser.add_argument("--schema-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    flt_summary_stage(
        params=load_params(args.params),
        flt_dir=args.flt_dir,
        retrain_root=args.retrain_root,
        schema_dir=args.schema_dir,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main, "flt_summary")
