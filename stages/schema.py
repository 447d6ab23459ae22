"""Stage `schema`: resolve the feature schema, validate graphs and labels, pack the splits."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from graphqa.config import PathsConfig, load_params
from graphqa.schema import find_builder_summary, find_graph_metadata, schema_stage, summary_beside
from graphqa.stage import run_stage


def sidecars_read(paths: PathsConfig) -> list[str]:
    """What the stage reads besides graphs and labels (metadata, builder summary), with a note
    for a file DVC does not track: dvc.yaml declares ``paths.graph_dir`` and the summary beside
    it, not ``paths.metadata_path`` / ``paths.summary_path`` (DVC cannot declare a path a param
    may leave null), so a file set elsewhere is tracked only once added to the stage's deps."""
    graph_dir = os.path.abspath(paths.graph_dir)
    declared = os.path.abspath(summary_beside(paths.graph_dir))
    metadata = find_graph_metadata(paths.graph_dir, paths.metadata_path)
    summary = find_builder_summary(paths.graph_dir, paths.summary_path)
    lines = [
        f"schema: metadata: {metadata or 'none, read off the .pt files'}",
        f"schema: builder summary: {summary or 'none'}",
    ]
    for key, found in (("paths.metadata_path", metadata), ("paths.summary_path", summary)):
        full = os.path.abspath(found) if found is not None else declared
        if not (full == declared or Path(full).is_relative_to(graph_dir)):
            lines.append(
                f"schema: note: {key} {found} is not a declared input of this stage: DVC "
                "reruns it when that file changes only if you add the file to its deps in dvc.yaml"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    coverage = schema_stage(
        graph_dir=params.paths.graph_dir,
        label_files=params.paths.label_files(),
        out_dir=args.out,
        verify_manifest=params.schema_check.verify_manifest,
        allow_missing_graphs=params.schema_check.allow_missing_graphs,
        manifest_ignore_metadata=params.schema_check.manifest_ignore_metadata,
        metadata_path=params.paths.metadata_path,
        summary_path=params.paths.summary_path,
    )
    for line in sidecars_read(params.paths):
        print(line)
    for split in params.paths.label_files():
        if split not in coverage:  # header-only tuning CSV: no tuning split
            print(f"schema: {split}: no labelled graphs (split not used)")
            continue
        info = coverage[split]
        print(f"schema: {split}: {info['usable']}/{info['total']} labelled graphs usable")


if __name__ == "__main__":
    run_stage(main, "schema")
