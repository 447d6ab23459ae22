"""Stage `schema`: resolve the feature schema, validate graphs and labels, pack the splits."""

from __future__ import annotations

import argparse

from graphqa.config import load_params
from graphqa.schema import check_dataset


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
    )
    for split in params.paths.label_files():
        info = coverage[split]
        print(f"schema: {split}: {info['usable']}/{info['total']} labelled graphs usable")


if __name__ == "__main__":
    main()
