"""Stage `schema`: resolve the feature schema, validate graphs and labels, pack the splits."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.schema import check_dataset
from graphqa.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/schema")
    args = parser.parse_args()
    params = load_params(args.params)
    coverage = check_dataset(
        graph_dir=params.paths.graph_dir,
        label_files=params.paths.label_files(),
        out_dir=args.out,
        verify_manifest=params.schema_check.verify_manifest,
        allow_missing_graphs=params.schema_check.allow_missing_graphs,
        manifest_ignore_metadata=params.schema_check.manifest_ignore_metadata,
        metadata_path=params.paths.metadata_path,
        summary_path=params.paths.summary_path,
    )
    for split in params.paths.label_files():
        if split not in coverage:  # header-only tuning CSV: no tuning split
            print(f"schema: {split}: no labelled graphs (split not used)")
            continue
        info = coverage[split]
        print(f"schema: {split}: {info['usable']}/{info['total']} labelled graphs usable")


if __name__ == "__main__":
    run_stage(main, "schema")
