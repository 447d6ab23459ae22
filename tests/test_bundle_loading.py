"""Loading a bundle is one path with one kind of error (issue 21).

One real bundle (network, trees, blend scorer) is built per module from the session fixtures;
each case copies it, breaks one file (re-hashing it in ``bundle.json`` when the point is bad
content with a consistent hash) and expects ``load_bundle`` to refuse it with one
:class:`~graphqa.contract.DataContractError` line ``<file>: '<key>': expected …``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from graphqa.bundle import build_bundle, load_bundle
from graphqa.contract import DataContractError
from graphqa.files import sha256_file, write_json
from graphqa.scorer import Scorer

CALIBRATION = {
    "method": "temperature",
    "temperature": {"temperature": 1.5, "bias": -0.1},
    "isotonic": {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.4, 1.0]},
    "conformal": {
        "method": "target_grouped",
        "coverage": 0.9,
        "quantile": 0.12,
        "scale": "pvar",
        "floor": 0.05,
        "n_targets": 8,
        "n": 48,
        "guaranteed": False,
        "guarantee": "none",
    },
}
THRESHOLDS = {"threshold": 0.3, "criterion": "f1"}


@pytest.fixture(scope="module")
def bundle_dir(
    tiny_run: Path,
    tiny_schema_dir: Path,
    tiny_trees_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A complete bundle (every file the loader reads) of the session's tiny run and trees."""
    tmp = tmp_path_factory.mktemp("loading")
    write_json(tmp / "calibration.json", CALIBRATION)
    write_json(tmp / "thresholds.json", THRESHOLDS)
    write_json(tmp / "scorer.json", Scorer("blend", 0.5).to_dict())
    build_bundle(
        model_ckpt=tiny_run / "checkpoints" / "best.ckpt",
        feature_metadata=tiny_schema_dir / "feature_metadata.json",
        calibration=tmp / "calibration.json",
        thresholds=tmp / "thresholds.json",
        params={},
        provenance={"source": "test"},
        metrics={},
        out_dir=tmp / "bundle",
        trees_model=tiny_trees_dir / "model.txt",
        scorer=tmp / "scorer.json",
    )
    return tmp / "bundle"


# --------------------------------------------------------------------------------------------
# Corrupting one file of a bundle copy


def rehash(root: Path, name: str) -> None:
    """Record ``name``'s current sha256 in ``bundle.json`` (bad content, consistent hash)."""
    manifest = json.loads((root / "bundle.json").read_text())
    manifest["files"][name] = sha256_file(root / name)
    (root / "bundle.json").write_text(json.dumps(manifest))


def write(name: str, data: bytes | str, consistent: bool = True) -> Callable[[Path], None]:
    """Replace a file's bytes (and re-hash it unless ``consistent`` is False)."""

    def mutate(root: Path) -> None:
        path = root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        if consistent and name != "bundle.json":
            rehash(root, name)

    return mutate


def edit_json(name: str, change: Callable[[Any], Any], consistent: bool = True) -> Callable:
    """Rewrite a JSON file as ``change(obj)`` returns it (or ``obj`` changed in place)."""

    def mutate(root: Path) -> None:
        obj = json.loads((root / name).read_text())
        result = change(obj)
        (root / name).write_text(json.dumps(obj if result is None else result))
        if consistent and name != "bundle.json":
            rehash(root, name)

    return mutate


def edit_tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    """Rewrite ``model.safetensors`` with ``change`` applied to its tensors, re-hashed."""

    def mutate(root: Path) -> None:
        tensors = load_file(str(root / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(root / "model.safetensors"))
        rehash(root, "model.safetensors")

    return mutate


def first_matrix(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in sorted(tensors.items()) if v.is_floating_point() and v.dim() == 2)


def _rename_tensor(t: dict[str, torch.Tensor]) -> None:
    name = first_matrix(t)
    t[name + "_renamed"] = t.pop(name)


def _grow_tensor(t: dict[str, torch.Tensor]) -> None:
    name = first_matrix(t)
    t[name] = torch.zeros(t[name].shape[0] + 1, t[name].shape[1])


def _double_tensor(t: dict[str, torch.Tensor]) -> None:
    name = first_matrix(t)
    t[name] = t[name].double()


def _nan_tensor(t: dict[str, torch.Tensor]) -> None:
    t[first_matrix(t)][0, 0] = float("nan")


def _rename_tree_feature(root: Path) -> None:
    lines = (root / "trees.txt").read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith("feature_names="))
    names = lines[i].removeprefix("feature_names=").split(" ")
    lines[i] = "feature_names=" + " ".join(["renamed", *names[1:]])
    (root / "trees.txt").write_text("\n".join(lines))
    rehash(root, "trees.txt")


def _remove_required(root: Path) -> None:
    (root / "model_config.json").unlink()

    def unlist(manifest: dict[str, Any]) -> None:
        del manifest["files"]["model_config.json"]

    edit_json("bundle.json", unlist)(root)


def _manifest_folder(root: Path) -> None:
    (root / "bundle.json").unlink()
    (root / "bundle.json").mkdir()


def _drop_trees(root: Path) -> None:
    (root / "trees.txt").unlink()

    def unlist(manifest: dict[str, Any]) -> None:
        del manifest["files"]["trees.txt"]

    edit_json("bundle.json", unlist)(root)


def _rename_schema_column(root: Path) -> None:
    def change(meta: dict[str, Any]) -> None:
        meta["node"]["columns"][0] = "renamed_column"

    edit_json("feature_metadata.json", change)(root)


def _set(path: str, value: Any) -> Callable[[Any], None]:
    """Set (or, with ``...``, delete) a dotted key of a JSON object."""

    def change(obj: Any) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[key]
        if value is ...:
            del obj[last]
        else:
            obj[last] = value

    return change


def _isotonic(x: list[float], y: list[float]) -> Callable[[Any], None]:
    def change(cal: dict[str, Any]) -> None:
        cal["method"] = "isotonic"
        cal["isotonic"] = {"x": x, "y": y}

    return change


@dataclass(frozen=True)
class Case:
    """One malformed bundle: ``mutate`` breaks a copy; the error must start with
    ``<copy>/<file>: '<key>': expected`` and contain ``says``."""

    id: str
    file: str
    key: str
    says: str
    mutate: Callable[[Path], None]


M, C, W, F, S = (
    "bundle.json",
    "model_config.json",
    "model.safetensors",
    "feature_metadata.json",
    "scorer.json",
)
T, CAL, TH = "trees.txt", "calibration.json", "thresholds.json"

CASES = [
    # bundle.json
    Case("manifest-missing", M, "<file>", "no such file", lambda r: (r / M).unlink()),
    Case("manifest-not-json", M, "<file>", "valid JSON", write(M, "{not json")),
    Case("manifest-not-an-object", M, "<file>", "a JSON object", write(M, "[]")),
    Case("manifest-a-folder", M, "<file>", "IsADirectoryError", _manifest_folder),
    Case("manifest-format", M, "format", "graphqa.bundle/1", edit_json(M, _set("format", "v0"))),
    Case("manifest-no-files", M, "files", "file name -> sha256", edit_json(M, _set("files", ...))),
    Case(
        "manifest-path-escape",
        M,
        "files",
        "inside the bundle folder",
        edit_json(M, lambda m: m["files"].update({"../outside.json": "0" * 64})),
    ),
    Case(
        "manifest-bad-digest",
        M,
        f"files.{CAL}",
        "sha256 hex digest",
        edit_json(M, lambda m: m["files"].update({CAL: "abc"})),
    ),
    Case("manifest-required-unlisted", M, "files", "an entry for each", _remove_required),
    Case("listed-file-missing", TH, "<file>", "listed in bundle.json", lambda r: (r / TH).unlink()),
    Case("hash-mismatch", CAL, "sha256", "from bundle.json", write(CAL, "{}", consistent=False)),
    Case(
        "unlisted-extra-file",
        "evil.py",
        "<file>",
        "only files listed",
        write("evil.py", "x=1", consistent=False),
    ),
    # model_config.json
    Case("config-not-json", C, "<file>", "valid JSON", write(C, '{"node_dim": ')),
    Case(
        "config-unknown-key", C, "hiden_dim", "only NetConfig", edit_json(C, _set("hiden_dim", 8))
    ),
    Case("config-missing-key", C, "node_dim", "required", edit_json(C, _set("node_dim", ...))),
    Case("config-wrong-type", C, "hidden_dim", "integer", edit_json(C, _set("hidden_dim", "16"))),
    Case("config-dropout", C, "dropout", "[0, 1)", edit_json(C, _set("dropout", 1.5))),
    Case("config-pooling", C, "pooling", "mean|max", edit_json(C, _set("pooling", "median"))),
    Case("config-flag", C, "pooled_skip", "true or false", edit_json(C, _set("pooled_skip", 1))),
    Case("config-keep", C, "node_keep", "indices", edit_json(C, _set("node_keep", [0, 10**6]))),
    Case(
        "config-dims-not-schema",
        C,
        "edge_dim",
        f"edge columns of {F}",
        edit_json(C, lambda c: c.update(edge_dim=c["edge_dim"] + 1)),
    ),
    # model.safetensors
    Case("weights-not-safetensors", W, "<file>", "safetensors", write(W, b"not safetensors")),
    Case(
        "weights-truncated",
        W,
        "<file>",
        "safetensors",
        lambda r: write(W, (r / W).read_bytes()[:-64])(r),
    ),
    Case(
        "weights-a-pickle",
        W,
        "<file>",
        "safetensors",
        lambda r: write(W, pickle.dumps(load_file(str(r / W))))(r),
    ),
    Case(
        "weights-renamed-tensor",
        W,
        "<first matrix>",
        "a tensor of the network",
        edit_tensors(_rename_tensor),
    ),
    Case(
        "weights-extra-tensor",
        W,
        "zz_extra",
        "only the tensors",
        edit_tensors(lambda t: t.update(zz_extra=torch.zeros(1))),
    ),
    Case("weights-shape", W, "<first matrix>", "shape", edit_tensors(_grow_tensor)),
    Case("weights-dtype", W, "<first matrix>", "dtype torch.float32", edit_tensors(_double_tensor)),
    Case("weights-not-finite", W, "<first matrix>", "finite values", edit_tensors(_nan_tensor)),
    Case(
        "weights-indices-not-config",
        W,
        "node_norm.index",
        "indices model_config.json selects",
        edit_tensors(lambda t: t.update({"node_norm.index": t["node_norm.index"].flip(0)})),
    ),
    # feature_metadata.json
    Case("schema-not-json", F, "<file>", "valid JSON", write(F, "nope")),
    Case("schema-no-edge", F, "edge", "an object", edit_json(F, _set("edge", ...))),
    Case(
        "schema-columns-type",
        F,
        "node.columns",
        "column names",
        edit_json(F, _set("node.columns", [1, 2])),
    ),
    Case("schema-dim", F, "node.dim", "number of node.columns", edit_json(F, _set("node.dim", 1))),
    Case("schema-module", F, "edge.module", "module name", edit_json(F, _set("edge.module", 3))),
    Case(
        "schema-aliases",
        F,
        "edge.aliases",
        "list of names",
        edit_json(F, _set("edge.aliases", "a")),
    ),
    Case(
        "schema-registry", F, "module_registry", "object", edit_json(F, _set("module_registry", []))
    ),
    Case("schema-source", F, "source", "a string", edit_json(F, _set("source", None))),
    Case(
        "schema-not-the-trees-schema", T, "feature_names", "current schema", _rename_schema_column
    ),
    # scorer.json
    Case("scorer-unknown-family", S, "family", "one of gnn", edit_json(S, _set("family", "xgb"))),
    Case("scorer-weight-range", S, "blend_weight", "[0, 1]", edit_json(S, _set("blend_weight", 2))),
    Case(
        "scorer-weight-type", S, "blend_weight", "[0, 1]", edit_json(S, _set("blend_weight", "0.5"))
    ),
    Case("scorer-format", S, "format", "graphqa.scorer/1", edit_json(S, _set("format", ...))),
    Case("scorer-not-an-object", S, "<file>", "a JSON object", write(S, "[1]")),
    Case("scorer-without-its-trees", S, "family", "trees.txt for family blend", _drop_trees),
    # trees.txt
    Case("trees-a-pickle", T, "<file>", "first line 'tree'", write(T, pickle.dumps({"t": 1}))),
    Case("trees-not-lightgbm", T, "<file>", "LightGBM text model", write(T, "tree\ngarbage\n")),
    Case("trees-not-utf8", T, "<file>", "UTF-8", write(T, b"tree\n\xff\xfe")),
    Case("trees-feature-names", T, "feature_names", "current schema", _rename_tree_feature),
    # calibration.json
    Case("calibration-not-utf8", CAL, "<file>", "UTF-8", write(CAL, b"\xff\xfe{}")),
    Case("calibration-method", CAL, "method", "temperature", edit_json(CAL, _set("method", "x"))),
    Case(
        "calibration-temperature",
        CAL,
        "temperature.temperature",
        "> 0",
        edit_json(CAL, _set("temperature.temperature", -1.0)),
    ),
    Case(
        "calibration-no-temperature",
        CAL,
        "temperature",
        "an object",
        edit_json(CAL, _set("temperature", ...)),
    ),
    Case(
        "calibration-temperature-not-an-object",
        CAL,
        "temperature",
        "an object",
        edit_json(CAL, _set("temperature", 1.5)),
    ),
    Case(
        "calibration-isotonic-empty",
        CAL,
        "isotonic.x",
        "a non-empty list",
        edit_json(CAL, _isotonic([], [])),
    ),
    Case(
        "calibration-isotonic-order",
        CAL,
        "isotonic.x",
        "non-decreasing",
        edit_json(CAL, _isotonic([0.0, 1.0, 0.5], [0.0, 0.5, 1.0])),
    ),
    Case(
        "calibration-isotonic-lengths",
        CAL,
        "isotonic.y",
        "as many as isotonic.x",
        edit_json(CAL, _isotonic([0.0, 1.0], [0.0])),
    ),
    Case(
        "calibration-no-conformal",
        CAL,
        "conformal",
        "object",
        edit_json(CAL, _set("conformal", ...)),
    ),
    Case(
        "calibration-coverage",
        CAL,
        "conformal.coverage",
        "(0, 1)",
        edit_json(CAL, _set("conformal.coverage", 1.5)),
    ),
    Case(
        "calibration-width",
        CAL,
        "conformal.quantile",
        ">= 0",
        edit_json(CAL, _set("conformal.quantile", "wide")),
    ),
    Case(
        "calibration-interval-method",
        CAL,
        "conformal.method",
        "target_grouped",
        edit_json(CAL, _set("conformal.method", "bogus")),
    ),
    Case(
        "calibration-interval-scale",
        CAL,
        "conformal.scale",
        "pvar",
        edit_json(CAL, _set("conformal.scale", "bogus")),
    ),
    Case(
        "calibration-interval-floor",
        CAL,
        "conformal.floor",
        "> 0",
        edit_json(CAL, _set("conformal.floor", ...)),
    ),
    Case(
        "calibration-interval-count",
        CAL,
        "conformal.n_targets",
        "integer >= 0",
        edit_json(CAL, _set("conformal.n_targets", "8")),
    ),
    Case(
        "calibration-interval-flag",
        CAL,
        "conformal.guaranteed",
        "true or false",
        edit_json(CAL, _set("conformal.guaranteed", "yes")),
    ),
    # thresholds.json
    Case("thresholds-not-json", TH, "<file>", "valid JSON", write(TH, "")),
    Case("thresholds-missing", TH, "threshold", "[0, 1]", edit_json(TH, _set("threshold", ...))),
    Case("thresholds-type", TH, "threshold", "[0, 1]", edit_json(TH, _set("threshold", "high"))),
    Case("thresholds-bool", TH, "threshold", "[0, 1]", edit_json(TH, _set("threshold", True))),
    Case("thresholds-range", TH, "threshold", "[0, 1]", edit_json(TH, _set("threshold", 1.5))),
]


def broken_copy(bundle_dir: Path, tmp_path: Path, case: Case) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    case.mutate(copy)
    return copy


def expected_start(copy: Path, case: Case, bundle_dir: Path) -> str:
    key = case.key
    if key == "<first matrix>":
        key = first_matrix(load_file(str(bundle_dir / "model.safetensors")))
    return f"{copy / case.file}: '{key}': expected"


def test_the_intact_bundle_loads_every_file(bundle_dir: Path) -> None:
    """The corpus breaks a bundle that loads and exercises every reader."""
    bundle = load_bundle(bundle_dir)
    assert bundle.scorer == Scorer("blend", 0.5) and bundle.trees is not None
    assert bundle.calibration["conformal"]["quantile"] == 0.12
    assert bundle.thresholds["threshold"] == 0.3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_malformed_bundle_is_refused_in_one_line(
    bundle_dir: Path, tmp_path: Path, case: Case
) -> None:
    copy = broken_copy(bundle_dir, tmp_path, case)
    with pytest.raises(DataContractError) as err:
        load_bundle(copy)
    message = str(err.value)
    assert message.startswith(expected_start(copy, case, bundle_dir)), message
    assert case.says in message, message
    assert "\n" not in message


def test_each_reader_refuses_a_non_object_naming_its_file(tmp_path: Path) -> None:
    """The readers behind the bundle's own JSON check refuse non-objects on their own too."""
    from graphqa.model import NetConfig
    from graphqa.schema import FeatureSchema

    (tmp_path / F).write_text("[]")
    readers: list[tuple[str, Callable[[], Any]]] = [
        (S, lambda: Scorer.from_dict([], source=tmp_path / S)),
        (C, lambda: NetConfig.from_dict([], source=tmp_path / C)),
        (F, lambda: FeatureSchema.load(tmp_path / F)),
    ]
    for name, read in readers:
        with pytest.raises(DataContractError) as err:
            read()
        assert str(err.value).startswith(f"{tmp_path / name}: '<file>': expected a JSON object")


def test_the_corpus_covers_every_file_the_loader_reads() -> None:
    assert {M, C, W, F, S, T, CAL, TH} <= {c.file for c in CASES}
    assert len(CASES) >= 13


@pytest.mark.parametrize("case_id", ["weights-not-safetensors", "scorer-unknown-family"])
def test_predict_cli_on_a_corrupt_bundle_prints_one_line_and_exits_2(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path, case_id: str
) -> None:
    """The issue's two reports, as a user meets them: `graphqa predict --bundle BAD`."""
    case = next(c for c in CASES if c.id == case_id)
    copy = broken_copy(bundle_dir, tmp_path, case)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "graphqa.cli", "predict", "--bundle", str(copy)]
    command += ["--graphs", str(tiny_dataset / "graphs"), "--workers", "0", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("graphqa: error: " + expected_start(copy, case, bundle_dir))
    assert "Traceback" not in done.stderr
