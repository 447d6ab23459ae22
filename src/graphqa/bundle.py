"""Self-contained, verifiable model bundle: everything inference needs, nothing machine-bound.

``bundle.json`` lists every file with its sha256; loading refuses a bundle whose files do not
match. Weights are safetensors (no pickle); the rest is JSON. No timestamps or absolute paths,
so two reproductions of the pipeline produce byte-identical bundles.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from graphqa.contract import DataContractError, atomic_dir, dump_json, read_json, write_json
from graphqa.model import NetConfig, TopoQANet, build_net
from graphqa.schema import FEATURE_METADATA, FeatureSchema

BUNDLE_FORMAT = "graphqa.bundle/1"
MANIFEST = "bundle.json"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
CALIBRATION = "calibration.json"
THRESHOLDS = "thresholds.json"
FEATURE_MASK = "feature_mask.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lock_provenance(lock_path: str | Path, stages: list[str]) -> dict[str, Any]:
    """Data and code hashes that ``dvc.lock`` recorded for the stages behind the model."""
    lock = yaml.safe_load(Path(lock_path).read_text()) or {}
    code: dict[str, str] = {}
    data: dict[str, str] = {}
    for name in stages:
        entry = (lock.get("stages") or {}).get(name)
        if entry is None:
            raise DataContractError(lock_path, f"stages.{name}", "a locked stage (run `dvc repro`)")
        for dep in entry.get("deps", []):
            target = code if dep["path"].startswith(("src/", "stages/")) else data
            target[dep["path"]] = dep.get("md5") or dep.get("hash", "")
    return {
        "source": "dvc.lock",
        "stages": stages,
        "code_md5": dict(sorted(code.items())),
        "data_md5": dict(sorted(data.items())),
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
) -> dict[str, Any]:
    """Write the bundle folder atomically and return its manifest."""
    from graphqa.train import load_module

    net = load_module(model_ckpt).net
    with atomic_dir(out_dir) as tmp:
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": BUNDLE_FORMAT})
        write_json(tmp / MODEL_CONFIG, net.config.to_dict())
        shutil.copyfile(feature_metadata, tmp / FEATURE_METADATA)
        shutil.copyfile(calibration, tmp / CALIBRATION)
        shutil.copyfile(thresholds, tmp / THRESHOLDS)
        mask_path = (params.get("feature_mask") or {}).get("path")
        if mask_path:
            shutil.copyfile(mask_path, tmp / FEATURE_MASK)
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
    return Bundle(
        root=root,
        net=net.eval(),
        schema=FeatureSchema.load(root / FEATURE_METADATA),
        calibration=read_json(root / CALIBRATION),
        thresholds=read_json(root / THRESHOLDS),
        manifest=manifest,
    )


def bundle_from_pipeline(
    *,
    final_dir: str | Path,
    calibration_dir: str | Path,
    lock_path: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Stage ``bundle``: package the final model with its calibration and provenance."""
    final_dir, calibration_dir = Path(final_dir), Path(calibration_dir)
    selection = json.loads((final_dir / "selection.json").read_text())
    chosen = json.loads((Path(selection["run_dir"]) / "summary.json").read_text())
    stages = ["dataset", "schema", "selection", "final_selection", "calibration"]
    calibration_metrics = read_json(calibration_dir / "metrics.json")
    metrics = {
        "model": selection["winner"],
        "val": chosen["metrics"],
        "val_calib": calibration_metrics,
    }
    return build_bundle(
        model_ckpt=final_dir / "model.ckpt",
        feature_metadata=final_dir / FEATURE_METADATA,
        calibration=calibration_dir / CALIBRATION,
        thresholds=calibration_dir / THRESHOLDS,
        params=chosen["params"],
        provenance=lock_provenance(lock_path, stages),
        metrics=metrics,
        out_dir=out_dir,
    )
