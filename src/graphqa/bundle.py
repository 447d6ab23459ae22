"""Self-contained, verifiable model bundle: everything inference needs, nothing machine-bound.

``bundle.json`` lists every file with its sha256; loading refuses a bundle whose files do not
match. Weights are safetensors and the trees LightGBM's own text format (no pickle anywhere);
``scorer.json`` says which score is shipped (GNN, trees or blend, see :mod:`graphqa.scorer`);
the rest is JSON. No timestamps or absolute paths,
so two reproductions of the pipeline produce byte-identical bundles.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from graphqa.contract import DataContractError, read_json
from graphqa.files import atomic_dir, dump_json, sha256_file, write_json
from graphqa.layout import FEATURE_METADATA, METRICS, MODEL_CARD, MODEL_CHECKPOINT, ModelPaths
from graphqa.maths.calibration import INTERVAL_SCALES, ConformalInterval
from graphqa.model import NetConfig, TopoQANet, build_net
from graphqa.module import load_module
from graphqa.pooled import pooled_feature_names
from graphqa.schema import FeatureSchema
from graphqa.scorer import Scorer
from graphqa.trees import MODEL_FILE as TREES_MODEL
from graphqa.trees import SUMMARY_FILE as TREES_SUMMARY
from graphqa.trees import load_trees

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
            write_json(tmp / SCORER, Scorer.from_dict(read_json(scorer), source=scorer).to_dict())
        mask = mask_from_config(net.config, FeatureSchema.load(feature_metadata))
        if mask is not None:
            write_json(tmp / FEATURE_MASK, mask)
        write_json(tmp / "params.json", params)
        write_json(tmp / "provenance.json", provenance)
        write_json(tmp / METRICS, metrics)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = {"format": BUNDLE_FORMAT, "files": files}
        (tmp / MANIFEST).write_text(dump_json(manifest))
    return manifest


#: Files every bundle carries (``bundle.json`` must list them); trees and scorer are optional.
REQUIRED_FILES = (WEIGHTS, MODEL_CONFIG, FEATURE_METADATA, CALIBRATION, THRESHOLDS)
#: ``calibration.json`` ``method`` values (``calibration.method`` of params.yaml).
CALIBRATION_METHODS = ("temperature", "isotonic", "none")
#: ``calibration.json`` ``conformal.method`` values (see ``ConformalInterval``).
INTERVAL_METHODS = ("target_grouped", "split")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Bundle:
    """A verified bundle, ready to score graphs (built by :func:`load_bundle` only).

    Attributes:
        root: the bundle folder.
        net: the network of ``model_config.json`` with the weights of ``model.safetensors``,
            in eval mode.
        schema: the feature schema the network was trained on (``feature_metadata.json``).
        calibration: ``calibration.json``; its ``method``, that method's block and
            ``conformal`` were checked.
        thresholds: ``thresholds.json``; ``threshold`` was checked to lie in [0, 1].
        manifest: ``bundle.json``, every listed file verified against its sha256.
        scorer: the shipped family (``scorer.json``; ``gnn`` when the bundle has none).
        trees: the :class:`graphqa.trees.TreesModel` when the bundle carries ``trees.txt``.
    """

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


def _show(value: Any) -> str:
    """A value as it appears in an error message: its repr, on one line, at most 80 chars."""
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _first_line(exc: BaseException) -> str:
    """An exception as one short line (library errors can span many)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _read_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in a bundle file.

    Args:
        path: the file.
        what: what the file holds, for the error message (``the calibration policy``).

    Returns:
        The parsed object.

    Raises:
        DataContractError: the file is missing or unreadable, not UTF-8, not JSON or not a
            JSON object (key ``<file>``).
    """
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise DataContractError(path, "<file>", f"a JSON object ({what})", type(obj).__name__)
    return obj


def _block(path: Path, obj: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """``obj[key]``, refused unless it is a JSON object (``what`` describes it)."""
    if key not in obj:
        raise DataContractError(path, key, f"an object ({what})", "missing")
    if not isinstance(obj[key], dict):
        raise DataContractError(path, key, f"an object ({what})", _show(obj[key]))
    return obj[key]


def _real(
    path: Path,
    obj: dict[str, Any],
    key: str,
    expected: str,
    ok: Callable[[float], bool] = lambda _: True,
    prefix: str = "",
) -> float:
    """``obj[key]`` as a float, refused unless it is a finite JSON number for which ``ok``
    holds (booleans are not numbers here).

    Args:
        path: the file ``obj`` was read from.
        obj: the JSON object holding the number.
        key: its key in ``obj``.
        expected: what the number must be, for the error message.
        ok: the number's range.
        prefix: dotted path of ``obj`` in the file (``conformal.``), for the error message.

    Returns:
        The number.

    Raises:
        DataContractError: the key is missing or its value is not such a number.
    """
    if key not in obj:
        raise DataContractError(path, prefix + key, expected, "missing")
    value = obj[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise DataContractError(path, prefix + key, expected, _show(value))
    return float(value)


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Check a bundle folder against its manifest, ``bundle.json``.

    The manifest must be a ``graphqa.bundle/1`` JSON object whose ``files`` maps plain file
    names to sha256 hex digests, with an entry for each of :data:`REQUIRED_FILES`. Every listed
    file must exist and match its digest, and the folder must hold no other file.

    Args:
        root: the bundle folder.

    Returns:
        The manifest.

    Raises:
        DataContractError: on the first violation, naming the file, the key and what was
            expected (``<root>/calibration.json: 'sha256': expected …``).
    """
    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = _read_object(manifest_path, f"the bundle manifest, {BUNDLE_FORMAT}")
    if manifest.get("format") != BUNDLE_FORMAT:
        got = _show(manifest["format"]) if "format" in manifest else "missing"
        raise DataContractError(manifest_path, "format", repr(BUNDLE_FORMAT), got)
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        got = _show(listed) if "files" in manifest else "missing"
        raise DataContractError(
            manifest_path, "files", "a non-empty object of file name -> sha256", got
        )
    for name, digest in listed.items():
        if name in ("", ".", "..", MANIFEST) or Path(name).name != name or "\\" in name:
            raise DataContractError(
                manifest_path, "files", "names of files inside the bundle folder", _show(name)
            )
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise DataContractError(
                manifest_path, f"files.{name}", "a sha256 hex digest (64 hex digits)", _show(digest)
            )
    unlisted_required = [name for name in REQUIRED_FILES if name not in listed]
    if unlisted_required:
        raise DataContractError(
            manifest_path,
            "files",
            f"an entry for each of {', '.join(REQUIRED_FILES)}",
            f"none for {', '.join(unlisted_required)}",
        )
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
            root / extra[0], "<file>", f"only files listed in {MANIFEST}", f"unlisted {extra}"
        )
    return manifest


def _check_net_config(config: NetConfig, schema: FeatureSchema, path: Path) -> None:
    """Refuse a network config whose input dims are not the schema's (``path``: its file)."""
    for key, dim, kind in (
        ("node_dim", schema.node_dim, "node"),
        ("edge_dim", schema.edge_dim, "edge"),
    ):
        if getattr(config, key) != dim:
            raise DataContractError(
                path,
                key,
                f"{dim} (the {kind} columns of {FEATURE_METADATA})",
                str(getattr(config, key)),
            )


def _load_weights(net: TopoQANet, path: Path) -> None:
    """Load ``model.safetensors`` into ``net`` (never unpickling anything).

    Every tensor of the network must be there with its name, dtype and shape, finite, and
    nothing else; integer tensors (the feature standardisers' column indices) are derived from
    the config, so they must equal the freshly built network's.

    Args:
        net: the network built from ``model_config.json``.
        path: the safetensors file.

    Raises:
        DataContractError: the file is not safetensors (key ``<file>``), or a tensor is
            missing, unexpected, of another dtype or shape, not finite or (indices) not the
            config's (key: the tensor's name).
    """
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # SafetensorError (not a safetensors file, truncated), OSError
        raise DataContractError(
            path, "<file>", "a safetensors file of the network's tensors", _first_line(exc)
        ) from None
    expected = net.state_dict()
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise DataContractError(
            path,
            missing[0],
            f"a tensor of the network of {MODEL_CONFIG}",
            f"missing ({len(missing)} of {len(expected)} tensors missing)",
        )
    unexpected = sorted(name for name in tensors if name not in expected)
    if unexpected:
        raise DataContractError(
            path,
            unexpected[0],
            f"only the tensors of the network of {MODEL_CONFIG}",
            f"an unexpected tensor ({len(unexpected)} unexpected)",
        )
    for name, want in expected.items():
        got = tensors[name]
        if got.dtype != want.dtype:
            raise DataContractError(path, name, f"dtype {want.dtype}", str(got.dtype))
        if got.shape != want.shape:
            raise DataContractError(
                path,
                name,
                f"shape {tuple(want.shape)} (from {MODEL_CONFIG})",
                str(tuple(got.shape)),
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise DataContractError(path, name, "finite values", "NaN or infinite values")
        if not got.is_floating_point() and not torch.equal(got, want):
            raise DataContractError(
                path,
                name,
                f"the column indices {MODEL_CONFIG} selects, {_show(want.tolist())}",
                _show(got.tolist()),
            )
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # defensive: the checks above cover what load_state_dict does
        raise DataContractError(
            path, "<file>", f"the tensors of the network of {MODEL_CONFIG}", _first_line(exc)
        ) from None


def _check_calibration(path: Path) -> dict[str, Any]:
    """``calibration.json``, checked the way :mod:`graphqa.predict` uses it.

    Args:
        path: the file.

    Returns:
        The calibration policy.

    Raises:
        DataContractError: ``method`` is not one of :data:`CALIBRATION_METHODS`; the chosen
            method's block (``temperature``: ``temperature`` > 0 and ``bias`` finite;
            ``isotonic``: equally long non-empty lists ``x`` (non-decreasing) and ``y``) or the
            ``conformal`` interval (``coverage`` in (0, 1), a width >= 0; in the
            target-grouped form also a known ``method`` and ``scale``, ``floor`` > 0, counts
            ``n_targets``/``n`` and the flag ``guaranteed``) is malformed.
    """
    calibration = _read_object(path, "the calibration policy")
    method = calibration.get("method")
    if not isinstance(method, str) or method not in CALIBRATION_METHODS:
        got = _show(method) if "method" in calibration else "missing"
        raise DataContractError(path, "method", f"one of {', '.join(CALIBRATION_METHODS)}", got)
    if method == "temperature":
        block = _block(path, calibration, "temperature", "the fitted temperature and bias")
        positive = "a finite number > 0"
        _real(path, block, "temperature", positive, lambda v: v > 0, prefix="temperature.")
        _real(path, block, "bias", "a finite number", prefix="temperature.")
    elif method == "isotonic":
        block = _block(path, calibration, "isotonic", "the fitted thresholds x and y")
        points = {}
        for key in ("x", "y"):
            values = block.get(key)
            if not isinstance(values, list) or not values:
                got = _show(values) if key in block else "missing"
                raise DataContractError(path, f"isotonic.{key}", "a non-empty list", got)
            expected = "finite numbers"
            points[key] = [
                _real(path, {str(i): v}, str(i), expected, prefix=f"isotonic.{key}.")
                for i, v in enumerate(values)
            ]
        if len(points["y"]) != len(points["x"]):
            raise DataContractError(
                path,
                "isotonic.y",
                f"{len(points['x'])} numbers (as many as isotonic.x)",
                str(len(points["y"])),
            )
        if any(b < a for a, b in zip(points["x"], points["x"][1:], strict=False)):
            raise DataContractError(path, "isotonic.x", "non-decreasing numbers", "a decrease")
    conformal = _block(path, calibration, "conformal", "the fitted prediction interval")
    _real(path, conformal, "coverage", "a number in (0, 1)", lambda v: 0 < v < 1, "conformal.")
    width = "quantile" if "quantile" in conformal else "half_width"
    _real(path, conformal, width, "a finite number >= 0", lambda v: v >= 0, "conformal.")
    if width == "quantile":  # the target-grouped form (the other is a pre-grouping bundle's)
        for key, allowed in (("method", INTERVAL_METHODS), ("scale", INTERVAL_SCALES)):
            if conformal.get(key) not in allowed:
                got = _show(conformal[key]) if key in conformal else "missing"
                raise DataContractError(
                    path, f"conformal.{key}", f"one of {', '.join(allowed)}", got
                )
        _real(path, conformal, "floor", "a finite number > 0", lambda v: v > 0, "conformal.")
        for key in ("n_targets", "n"):
            count = conformal.get(key)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                got = _show(count) if key in conformal else "missing"
                raise DataContractError(path, f"conformal.{key}", "an integer >= 0", got)
        if not isinstance(conformal.get("guaranteed"), bool):
            got = _show(conformal["guaranteed"]) if "guaranteed" in conformal else "missing"
            raise DataContractError(path, "conformal.guaranteed", "true or false", got)
    try:
        ConformalInterval.from_dict(conformal)
    except KeyError as exc:
        raise DataContractError(
            path, f"conformal.{exc.args[0]}", "present (a fitted conformal interval)", "missing"
        ) from None
    except (TypeError, ValueError) as exc:
        raise DataContractError(
            path, "conformal", "an interval written by the calibration stage", _first_line(exc)
        ) from None
    return calibration


def _check_thresholds(path: Path) -> dict[str, Any]:
    """``thresholds.json``: an object whose ``threshold`` is a number in [0, 1].

    Args:
        path: the file.

    Returns:
        The thresholds.

    Raises:
        DataContractError: the file is not such an object.
    """
    thresholds = _read_object(path, "the acceptance threshold")
    _real(path, thresholds, "threshold", "a number in [0, 1]", lambda v: 0 <= v <= 1)
    return thresholds


def load_bundle(root: str | Path) -> Bundle:
    """Verify a bundle folder and load everything inference needs from it.

    Nothing is unpickled: weights are safetensors, trees LightGBM text, the rest JSON. Every
    file is checked before use, so a malformed bundle is refused with one line naming the file,
    the key and what was expected (the CLI prints it and exits 2).

    Args:
        root: the bundle folder (``runs/bundle``).

    Returns:
        The loaded bundle.

    Raises:
        DataContractError: the folder does not match ``bundle.json`` (see
            :func:`verify_bundle`), or ``model_config.json``, ``model.safetensors``,
            ``feature_metadata.json``, ``scorer.json``, ``trees.txt``, ``calibration.json``
            or ``thresholds.json`` is malformed or inconsistent with the others.
    """
    root = Path(root)
    manifest = verify_bundle(root)
    config_path = root / MODEL_CONFIG
    config = NetConfig.from_dict(
        _read_object(config_path, "the network's NetConfig"), source=config_path
    )
    _read_object(root / FEATURE_METADATA, "the feature schema")  # JSON errors, one line
    schema = FeatureSchema.load(root / FEATURE_METADATA)
    _check_net_config(config, schema, config_path)
    try:
        net = build_net(config)
    except (TypeError, ValueError, RuntimeError) as exc:  # defensive: from_dict checked it
        raise DataContractError(
            config_path, "<file>", "a config the network can be built from", _first_line(exc)
        ) from None
    _load_weights(net, root / WEIGHTS)
    scorer = (
        Scorer.from_dict(_read_object(root / SCORER, "the shipped scorer"), source=root / SCORER)
        if (root / SCORER).is_file()
        else Scorer(family="gnn", blend_weight=1.0)
    )
    trees = None
    if (root / TREES).is_file():
        trees = load_trees(
            root / TREES,
            manifest["files"][TREES],
            pooled_feature_names(schema),
            sha256_source=MANIFEST,
        )
    if scorer.family != "gnn" and trees is None:
        raise DataContractError(
            root / SCORER, "family", f"a {TREES} for family {scorer.family}", "missing"
        )
    return Bundle(
        root=root,
        net=net.eval(),
        schema=schema,
        calibration=_check_calibration(root / CALIBRATION),
        thresholds=_check_thresholds(root / THRESHOLDS),
        manifest=manifest,
        scorer=scorer,
        trees=trees,
    )


def bundle_stage(
    *,
    model_dir: str | Path,
    calibration_dir: str | Path,
    out_dir: str | Path,
    trees_dir: str | Path | None = None,
    scorer_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Stage ``bundle``: package the final model (and the trees and the scorer choice when
    given) with its calibration and provenance."""
    model, calibration_dir = ModelPaths(Path(model_dir)), Path(calibration_dir)
    card = read_json(model.card)
    chosen = read_json(model.summary)
    inputs = {
        MODEL_CHECKPOINT: model.checkpoint,
        "model_summary.json": model.summary,
        MODEL_CARD: model.card,
        FEATURE_METADATA: model.feature_metadata,
        CALIBRATION: calibration_dir / CALIBRATION,
        THRESHOLDS: calibration_dir / THRESHOLDS,
        "calibration_metrics.json": calibration_dir / METRICS,
    }
    if trees_dir is not None:
        inputs[TREES] = Path(trees_dir) / TREES_MODEL
        inputs["trees_summary.json"] = Path(trees_dir) / TREES_SUMMARY
    if scorer_dir is not None:
        inputs[SCORER] = Path(scorer_dir) / SCORER
    metrics = {
        "model": card["model"],
        "why": card["reason"],
        "val": chosen["metrics"],
        "val_calib": read_json(calibration_dir / METRICS),
    }
    if scorer_dir is not None:
        choice = read_json(inputs[SCORER])
        metrics["scorer"] = {
            "family": choice["family"],
            "reason": choice["reason"],
            "val": choice["candidates"],
        }
    return build_bundle(
        model_ckpt=inputs[MODEL_CHECKPOINT],
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
