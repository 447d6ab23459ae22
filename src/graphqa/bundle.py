"""Self-contained, verifiable model bundle: everything inference needs, nothing machine-bound.

``bundle.json`` lists every file with its sha256; loading refuses a bundle whose files do not
match. Weights are safetensors and the trees LightGBM's own text format (no pickle anywhere);
``scorer.json`` says which score is shipped (GNN, trees or blend, see :mod:`graphqa.scorer`);
the rest is JSON. No timestamps or absolute paths,
so two reproductions of the pipeline produce byte-identical bundles.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from graphqa.contract import (
    DataContractError,
    atomic_dir,
    dump_json,
    read_json,
    sha256_file,
    write_json,
)
from graphqa.model import NetConfig, TopoQANet, build_net
from graphqa.schema import FEATURE_METADATA, FeatureSchema
from graphqa.scorer import Scorer

BUNDLE_FORMAT = "graphqa.bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
CALIBRATION = "calibration.json"
THRESHOLDS = "thresholds.json"
FEATURE_MASK = "feature_mask.json"
TREES = "trees.txt"
SCORER = "scorer.json"


def input_provenance(inputs: dict[str, Path], training: dict[str, Any]) -> dict[str, Any]:
    """Where the bundle came from, from the files the bundle stage itself reads.

    The training run records the hashes of its data and code in its summary; this adds the
    sha256 of every file the bundle was built from. (It used to copy hashes out of
    ``dvc.lock``, which DVC is still writing while the stage runs.)
    """
    return {
        "inputs_sha256": {name: sha256_file(path) for name, path in sorted(inputs.items())},
        "training": training,
    }


def mask_from_config(config: NetConfig, schema: FeatureSchema) -> dict[str, Any] | None:
    """The feature mask a network applies, as a mask file (None when it keeps everything)."""
    if config.node_keep is None and config.edge_keep is None:
        return None
    node = schema.node_columns
    edge = schema.edge_columns
    return {
        "node_columns": [node[i] for i in (config.node_keep or range(len(node)))],
        "edge_columns": [edge[i] for i in (config.edge_keep or range(len(edge)))],
        "source": "the shipped network's column selection",
    }


def build_bundle(
    *,
    model_ckpt: str | Path,
    feature_metadata: str | Path,
    calibration: str | Path,
    thresholds: str | Path,
    params: dict[str, Any],
    provenance: dict[str, Any],
    metrics: dict[str, Any],
    out_dir: str | Path,
    trees_model: str | Path | None = None,
    scorer: str | Path | None = None,
) -> dict[str, Any]:
    """Write the bundle folder atomically and return its manifest. ``trees_model`` (a
    LightGBM text model) and ``scorer`` (``scorer.json``) travel with the network when the
    pipeline has them; a bundle without them ships the GNN alone."""
    from graphqa.module import load_module

    net = load_module(model_ckpt).net
    with atomic_dir(out_dir) as tmp:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": BUNDLE_FORMAT})
        write_json(tmp / MODEL_CONFIG, net.config.to_dict())
        shutil.copyfile(feature_metadata, tmp / FEATURE_METADATA)
        shutil.copyfile(calibration, tmp / CALIBRATION)
        shutil.copyfile(thresholds, tmp / THRESHOLDS)
        if trees_model is not None:
            shutil.copyfile(trees_model, tmp / TREES)
        if scorer is not None:
            write_json(tmp / SCORER, Scorer.from_dict(read_json(scorer)).to_dict())
        mask = mask_from_config(net.config, FeatureSchema.load(feature_metadata))
        if mask is not None:
            write_json(tmp / FEATURE_MASK, mask)
        write_json(tmp / "params.json", params)
        write_json(tmp / "provenance.json", provenance)
        write_json(tmp / "metrics.json", metrics)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = {"format": BUNDLE_FORMAT, "files": files}
        (tmp / MANIFEST).write_text(dump_json(manifest))
    return manifest


@dataclass
class Bundle:
    """A verified bundle, ready to score graphs."""

    root: Path
    net: TopoQANet
    schema: FeatureSchema
    calibration: dict[str, Any]
    thresholds: dict[str, Any]
    manifest: dict[str, Any]
    scorer: Scorer
    trees: Any = None  # graphqa.trees.TreesModel when the bundle carries trees

    @property
    def components(self) -> tuple[str, ...]:
        """The families whose scores this bundle can compute."""
        return ("gnn", "trees", "blend") if self.trees is not None else ("gnn",)


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Manifest of a bundle whose files all match their recorded sha256; refuses otherwise."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise DataContractError(manifest_path, "<file>", "a bundle manifest", "missing")
    manifest = read_json(manifest_path)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise DataContractError(manifest_path, "format", BUNDLE_FORMAT, str(manifest.get("format")))
    listed = manifest.get("files") or {}
    for name, digest in listed.items():
        path = root / name
        if not path.is_file():
            raise DataContractError(
                path, "<file>", f"a bundle file listed in {MANIFEST}", "missing"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise DataContractError(
                path,
                "sha256",
                f"{digest[:16]}… (from {MANIFEST})",
                f"{actual[:16]}…: the bundle was modified; refusing to load it",
            )
    extra = sorted(p.name for p in root.iterdir() if p.name != MANIFEST and p.name not in listed)
    if extra:
        raise DataContractError(
            root, "files", f"only the files listed in {MANIFEST}", f"unlisted {extra}"
        )
    return manifest


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    manifest = verify_bundle(root)
    net = build_net(NetConfig.from_dict(read_json(root / MODEL_CONFIG)))
    net.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    schema = FeatureSchema.load(root / FEATURE_METADATA)
    scorer = (
        Scorer.from_dict(read_json(root / SCORER))
        if (root / SCORER).is_file()
        else Scorer(family="gnn", blend_weight=1.0)
    )
    trees = None
    if (root / TREES).is_file():
        from graphqa.pooled import pooled_feature_names
        from graphqa.trees import load_trees

        trees = load_trees(root / TREES, manifest["files"][TREES], pooled_feature_names(schema))
    if scorer.family != "gnn" and trees is None:
        raise DataContractError(
            root / SCORER, "family", f"a {TREES} for family {scorer.family}", "missing"
        )
    return Bundle(
        root=root,
        net=net.eval(),
        schema=schema,
        calibration=read_json(root / CALIBRATION),
        thresholds=read_json(root / THRESHOLDS),
        manifest=manifest,
        scorer=scorer,
        trees=trees,
    )


def bundle_from_pipeline(
    *,
    model_dir: str | Path,
    calibration_dir: str | Path,
    out_dir: str | Path,
    trees_dir: str | Path | None = None,
    scorer_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Stage ``bundle``: package the final model (and the trees and the scorer choice when
    given) with its calibration and provenance."""
    from graphqa.select import MODEL_CARD

    model_dir, calibration_dir = Path(model_dir), Path(calibration_dir)
    card = read_json(model_dir / MODEL_CARD)
    chosen = read_json(model_dir / "summary.json")
    inputs = {
        "model.ckpt": model_dir / "model.ckpt",
        "model_summary.json": model_dir / "summary.json",
        MODEL_CARD: model_dir / MODEL_CARD,
        FEATURE_METADATA: model_dir / FEATURE_METADATA,
        CALIBRATION: calibration_dir / CALIBRATION,
        THRESHOLDS: calibration_dir / THRESHOLDS,
        "calibration_metrics.json": calibration_dir / "metrics.json",
    }
    if trees_dir is not None:
        inputs[TREES] = Path(trees_dir) / "model.txt"
        inputs["trees_summary.json"] = Path(trees_dir) / "summary.json"
    if scorer_dir is not None:
        inputs[SCORER] = Path(scorer_dir) / SCORER
    metrics = {
        "model": card["model"],
        "why": card["reason"],
        "val": chosen["metrics"],
        "val_calib": read_json(calibration_dir / "metrics.json"),
    }
    if scorer_dir is not None:
        choice = read_json(inputs[SCORER])
        metrics["scorer"] = {
            "family": choice["family"],
            "reason": choice["reason"],
            "val": choice["candidates"],
        }
    return build_bundle(
        model_ckpt=inputs["model.ckpt"],
        feature_metadata=inputs[FEATURE_METADATA],
        calibration=inputs[CALIBRATION],
        thresholds=inputs[THRESHOLDS],
        params=chosen["params"],
        provenance=input_provenance(inputs, chosen.get("provenance", {})),
        metrics=metrics,
        out_dir=out_dir,
        trees_model=inputs.get(TREES),
        scorer=inputs.get(SCORER),
    )
