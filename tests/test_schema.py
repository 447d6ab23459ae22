"""Schema stage: resolve, validate and pack; bad inputs fail by name and leave no partial output."""

from __future__ import annotations

import collections
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from graphqa import dataset
from graphqa.contract import (
    GRAPH_MANIFEST,
    GRAPH_METADATA,
    NODE_COLUMNS,
    DataContractError,
    load_graph,
    save_graph,
    target_of,
)
from graphqa.data import SPLITS, PackedSplit
from graphqa.layout import FEATURE_METADATA, packed_path
from graphqa.manifest import manifest_entry
from graphqa.schema import FeatureSchema, schema_stage

from .conftest import BUILDER_SAMPLE, label_files

NODE_DIM = 172
EDGE_DIM = 11
TOPO_DIM = 140


# --------------------------------------------------------------------------------------------
# Helpers


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _run(root: Path, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
    return schema_stage(
        graph_dir=root / "graphs", label_files=label_files(root), out_dir=out_dir, **kwargs
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        f.relative_to(root).as_posix(): f.read_bytes()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def _csv(root: Path, split: str) -> Path:
    return root / "labels" / f"{split}.csv"


def _first_model(root: Path, split: str = "train") -> str:
    return str(_read_csv(_csv(root, split))["MODEL"].iloc[0])


def _graph_path(root: Path, model: str) -> Path:
    return root / "graphs" / target_of(model) / f"{model}.pt"


def _resave(root: Path, mutate: Callable[[Data], None], update_manifest: bool) -> Path:
    """Load the first train graph, mutate it in place, save it; optionally re-hash it."""
    model = _first_model(root)
    path = _graph_path(root, model)
    data = load_graph(path)
    mutate(data)
    save_graph(data, path)
    if update_manifest:
        manifest_file = root / "graphs" / GRAPH_MANIFEST
        manifest = _read_json(manifest_file)
        key = f"{target_of(model)}/{model}.pt"
        assert key in manifest
        manifest[key] = manifest_entry(data)
        manifest_file.write_text(json.dumps(manifest))
    return path


# --------------------------------------------------------------------------------------------
# Corruptions: each returns (offending file, key named in the error) and the check kwargs


Corruption = Callable[[Path], tuple[Path, str]]


def corrupt_pt(root: Path) -> tuple[Path, str]:
    path = _graph_path(root, _first_model(root))
    path.write_bytes(b"\x00this is not a torch file\xff" * 40)
    return path, "<file>"


def _add_node_column(data: Data) -> None:
    data.x = torch.cat([data.x, torch.zeros(data.x.shape[0], 1)], dim=1)


def wrong_node_dim(root: Path) -> tuple[Path, str]:
    return _resave(root, _add_node_column, update_manifest=True), "x"


def wrong_node_dim_unverified(root: Path) -> tuple[Path, str]:
    return _resave(root, _add_node_column, update_manifest=False), "x"


def x_float64(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.x = data.x.double()

    return _resave(root, mutate, update_manifest=True), "x/edge_attr"


def nan_in_x(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.x[1, 3] = float("nan")

    return _resave(root, mutate, update_manifest=True), "x"


def edge_index_out_of_range(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.edge_index[1, 0] = data.x.shape[0]

    return _resave(root, mutate, update_manifest=True), "edge_index"


def manifest_mismatch(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.x[0, 0] += 1.0

    return _resave(root, mutate, update_manifest=False), "x"


def missing_graph(root: Path) -> tuple[Path, str]:
    model = _first_model(root)
    _graph_path(root, model).unlink()
    return _csv(root, "train"), f"MODEL {model}"


def duplicate_model(root: Path) -> tuple[Path, str]:
    path = _csv(root, "train")
    frame = _read_csv(path)
    _write_csv(pd.concat([frame, frame.iloc[[2]]]), path)
    return path, "MODEL"


def _set_dockq(root: Path, value: str) -> tuple[Path, str]:
    path = _csv(root, "val")
    frame = _read_csv(path)
    frame.loc[1, "dockq"] = value
    _write_csv(frame, path)
    return path, f"dockq (row 3, MODEL {frame['MODEL'].iloc[1]})"


def dockq_above_one(root: Path) -> tuple[Path, str]:
    return _set_dockq(root, "1.5")


def dockq_not_a_number(root: Path) -> tuple[Path, str]:
    return _set_dockq(root, "abc")


def target_in_two_splits(root: Path) -> tuple[Path, str]:
    train, val = _read_csv(_csv(root, "train")), _read_csv(_csv(root, "val"))
    moved = val.iloc[[0]]
    _write_csv(pd.concat([train, moved]), _csv(root, "train"))
    _write_csv(val.iloc[1:], _csv(root, "val"))
    # train is read first, so the target is reported where it shows up the second time
    return _csv(root, "val"), f"target {target_of(moved['MODEL'].iloc[0])}"


def node_columns_length(root: Path) -> tuple[Path, str]:
    path = root / "graphs" / NODE_COLUMNS
    path.write_text(json.dumps([*_read_json(path), "extra_column"]))
    return path, "<file>"


def node_columns_length_without_metadata(root: Path) -> tuple[Path, str]:
    (root / "graphs" / GRAPH_METADATA).unlink()
    path = root / "graphs" / NODE_COLUMNS
    path.write_text(json.dumps(_read_json(path)[:-1]))
    return path, "<file>"


CORRUPTIONS: list[tuple[Corruption, dict[str, Any]]] = [
    (corrupt_pt, {}),
    (wrong_node_dim, {}),
    (wrong_node_dim_unverified, {"verify_manifest": False}),
    (x_float64, {}),
    (nan_in_x, {}),
    (edge_index_out_of_range, {}),
    (manifest_mismatch, {}),
    (missing_graph, {}),
    (duplicate_model, {}),
    (dockq_above_one, {}),
    (dockq_not_a_number, {}),
    (target_in_two_splits, {}),
    (node_columns_length, {}),
    (node_columns_length_without_metadata, {}),
]


# --------------------------------------------------------------------------------------------
# A good run


@pytest.fixture(scope="module")
def good_run(
    tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:
    """(dataset copy, schema out_dir, returned coverage) of a successful check."""
    base = tmp_path_factory.mktemp("schema_good")
    root = _copy(tiny_dataset, base / "dataset")
    out = base / "schema"
    coverage = _run(root, out)
    return root, out, coverage


def test_good_run_writes_all_outputs(good_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, _ = good_run
    expected = {FEATURE_METADATA, "dataset_coverage.json", *(f"packed/{s}.pt" for s in SPLITS)}
    assert set(_snapshot(out)) == expected
    # the atomic swap leaves no temporary siblings behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset", "schema"]


def test_feature_metadata(good_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, _ = good_run
    meta = _read_json(out / FEATURE_METADATA)

    assert meta["source"] == GRAPH_METADATA
    assert meta["node"]["dim"] == NODE_DIM
    assert meta["edge"]["dim"] == EDGE_DIM
    assert meta["topology"]["dim"] == TOPO_DIM
    assert meta["node"]["columns"] == dataset.node_columns()
    assert meta["edge"]["columns"] == dataset.EDGE_COLUMN_NAMES
    assert meta["topology"]["columns"] == dataset.topology_columns()
    assert meta["edge"]["module"] == dataset.EDGE_MODULE

    schema = FeatureSchema.load(out / FEATURE_METADATA)
    assert (schema.node_dim, schema.edge_dim, schema.topology_dim) == (NODE_DIM, EDGE_DIM, TOPO_DIM)
    assert schema.basic_columns == dataset.BASIC_COLUMNS


def test_dataset_coverage(good_run: tuple[Path, Path, dict[str, Any]]) -> None:
    root, out, coverage = good_run

    assert _read_json(out / "dataset_coverage.json") == coverage
    for split in SPLITS:
        rows = len(_read_csv(_csv(root, split)))
        assert coverage[split] == {
            "total": rows,
            "usable": rows,
            "coverage": 1.0,
            "missing_graphs": [],
        }
    assert coverage["graph_files"] == 48
    assert coverage["graphs_without_labels"] == {"count": 0, "models": []}


def test_packed_splits_round_trip_exactly(good_run: tuple[Path, Path, dict[str, Any]]) -> None:
    root, out, _ = good_run
    total = 0
    for split in SPLITS:
        packed = PackedSplit.load(packed_path(out / "packed", split))
        frame = pd.read_csv(
            _csv(root, split), dtype={"MODEL": str, "capri": str}, keep_default_na=False
        )
        assert packed.models == list(frame["MODEL"])
        assert packed.capri == list(frame["capri"])
        assert torch.equal(packed.y, torch.tensor(frame["dockq"].to_numpy(), dtype=torch.float32))
        for i, model in enumerate(packed.models):
            assert packed.keys[i] == f"{target_of(model)}/{model}"
            assert packed.targets[i] == target_of(model)
            original = load_graph(_graph_path(root, model))
            graph = packed.graph(i)
            for key in ("x", "edge_index", "edge_attr"):
                got, want = getattr(graph, key), getattr(original, key)
                assert got.dtype == want.dtype, (split, model, key)
                assert torch.equal(got, want), (split, model, key)
        total += len(packed)
    assert total == 48


def test_check_does_not_touch_its_input(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    before = _snapshot(root)

    _run(root, tmp_path / "schema")

    assert _snapshot(root) == before


def test_rerun_is_byte_identical(
    good_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, out, _ = good_run

    _run(root, tmp_path / "again")

    assert _snapshot(tmp_path / "again") == _snapshot(out)


def test_schema_falls_back_to_pt_inspection(
    good_run: tuple[Path, Path, dict[str, Any]], tiny_dataset: Path, tmp_path: Path
) -> None:
    _, good_out, _ = good_run
    root = _copy(tiny_dataset, tmp_path / "dataset")
    (root / "graphs" / GRAPH_METADATA).unlink()
    # rename one column in the sidecar to prove names are read from it, not made up
    node_file = root / "graphs" / NODE_COLUMNS
    names = _read_json(node_file)
    names[0] = "rasa_from_sidecar"
    node_file.write_text(json.dumps(names))

    _run(root, tmp_path / "schema")

    meta = _read_json(tmp_path / "schema" / FEATURE_METADATA)
    good = _read_json(good_out / FEATURE_METADATA)
    assert meta["source"] == "pt_inspection"
    assert (meta["node"]["dim"], meta["edge"]["dim"], meta["topology"]["dim"]) == (
        NODE_DIM,
        EDGE_DIM,
        TOPO_DIM,
    )
    assert meta["node"]["columns"] == names
    assert meta["node"]["columns"][1:] == good["node"]["columns"][1:]
    assert meta["edge"]["columns"] == good["edge"]["columns"]
    assert meta["topology"]["columns"] == good["topology"]["columns"]
    assert meta["edge"]["module"] == dataset.EDGE_MODULE
    for split in SPLITS:
        assert (tmp_path / "schema" / "packed" / f"{split}.pt").is_file()


# --------------------------------------------------------------------------------------------
# Bad inputs: named error, no partial output


@pytest.mark.parametrize("previous", [False, True], ids=["no_previous_output", "previous_output"])
@pytest.mark.parametrize(
    ("corrupt", "kwargs"), CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS]
)
def test_bad_input_fails_by_name_and_leaves_no_partial_output(
    tiny_dataset: Path,
    tmp_path: Path,
    corrupt: Corruption,
    kwargs: dict[str, Any],
    previous: bool,
) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    out = tmp_path / "out" / "schema"
    before: dict[str, bytes] | None = None
    if previous:
        _run(root, out, **kwargs)
        before = _snapshot(out)
        assert before

    bad_file, key = corrupt(root)
    with pytest.raises(DataContractError) as exc:
        _run(root, out, **kwargs)

    err = exc.value
    assert err.file == str(bad_file)
    assert str(bad_file) in str(err)
    assert err.key == key
    assert f"'{key}'" in str(err)
    if before is None:
        assert not out.exists()
    else:
        assert _snapshot(out) == before
    leftovers = [p.name for p in out.parent.glob(".*")] if out.parent.exists() else []
    assert leftovers == []


def test_manifest_mismatch_mentions_the_manifest(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    manifest_mismatch(root)

    with pytest.raises(DataContractError, match=GRAPH_MANIFEST):
        _run(root, tmp_path / "schema")
    # the manifest is what caught it: without verification the edited graph is valid
    _run(root, tmp_path / "schema", verify_manifest=False)


def test_target_in_two_splits_names_both_files(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    target_in_two_splits(root)

    with pytest.raises(DataContractError) as exc:
        _run(root, tmp_path / "schema")

    assert str(_csv(root, "train")) in str(exc.value)
    assert str(_csv(root, "val")) in str(exc.value)


def test_allow_missing_graphs_drops_and_reports_them(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    model = _first_model(root)
    _graph_path(root, model).unlink()
    total = len(_read_csv(_csv(root, "train")))
    out = tmp_path / "schema"

    coverage = _run(root, out, allow_missing_graphs=True)

    assert coverage["train"]["missing_graphs"] == [model]
    assert coverage["train"]["total"] == total
    assert coverage["train"]["usable"] == total - 1
    assert coverage["train"]["coverage"] == pytest.approx((total - 1) / total, abs=1e-6)
    assert _read_json(out / "dataset_coverage.json") == coverage
    packed = PackedSplit.load(packed_path(out / "packed", "train"))
    assert len(packed) == total - 1
    assert model not in packed.models


def test_unlabelled_graphs_are_reported(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    frame = _read_csv(_csv(root, "test"))
    dropped = str(frame["MODEL"].iloc[-1])
    _write_csv(frame.iloc[:-1], _csv(root, "test"))

    coverage = _run(root, tmp_path / "schema")

    assert coverage["graphs_without_labels"] == {
        "count": 1,
        "models": [f"{target_of(dropped)}/{dropped}"],
    }


def test_integer_dockq_values_are_accepted(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    path = _csv(root, "val")
    frame = _read_csv(path)
    frame["dockq"] = ["1" if i % 2 else "0" for i in range(len(frame))]
    _write_csv(frame, path)

    coverage = _run(root, tmp_path / "schema")

    assert coverage["val"]["usable"] == len(frame)
    packed = PackedSplit.load(packed_path(tmp_path / "schema" / "packed", "val"))
    assert packed.y.tolist() == [float(v) for v in frame["dockq"]]


# --------------------------------------------------------------------------------------------
# load_graph only unpickles PyG data classes


class _ForeignDict(collections.OrderedDict):  # type: ignore[type-arg]
    """Not on the allowlist, so a weights-only load must refuse it."""


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran during unpickling")


class _Payload:
    """Pickles as a call to ``_write_marker``: runs code on any non-weights-only load."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _write_marker, (self.marker,)


def test_load_graph_refuses_foreign_class(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"x": torch.zeros(2, 2), "extra": _ForeignDict(a=1)}, path)

    with pytest.raises(DataContractError) as exc:
        load_graph(path)

    assert exc.value.file == str(path)
    assert exc.value.key == "<file>"
    assert "_ForeignDict" in str(exc.value)  # names the refused class


def test_load_graph_never_runs_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    marker = tmp_path / "marker.txt"
    torch.save(Data(x=torch.zeros(2, 2), payload=_Payload(marker)), path)

    with pytest.raises(DataContractError) as exc:
        load_graph(path)

    assert str(path) in str(exc.value)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_graph_rejects_non_data_objects(tmp_path: Path) -> None:
    path = tmp_path / "tensors.pt"
    torch.save({"x": torch.zeros(2, 2)}, path)

    with pytest.raises(DataContractError) as exc:
        load_graph(path)

    assert exc.value.file == str(path)
    assert "Data" in str(exc.value)
    assert exc.value.got == "dict"


# --------------------------------------------------------------------------------------------
# A real builder folder (the independent fixture), its manifest, summary and sidecar paths


def _builder_copy(tmp_path: Path) -> Path:
    return _copy(BUILDER_SAMPLE, tmp_path / "build")


def _builder_labels(tmp_path: Path) -> dict[str, str]:
    """The fixture's labels split by target (3 targets: the test split stays empty)."""
    frame = pd.read_csv(BUILDER_SAMPLE / "labels.csv", dtype=str, keep_default_na=False)
    targets = frame["MODEL"].map(target_of)
    files = {}
    for split, target in zip(SPLITS, ("1abc", "2xyz", "3pqr", None), strict=True):
        path = tmp_path / "labels" / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(frame[targets == target], path)
        files[split] = str(path)
    return files


def _run_builder(root: Path, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return schema_stage(
        graph_dir=root / "graph_data",
        label_files=_builder_labels(tmp_path),
        out_dir=tmp_path / "schema",
        **kwargs,
    )


def test_builder_folder_passes_the_schema_stage(tmp_path: Path) -> None:
    coverage = schema_stage(
        graph_dir=BUILDER_SAMPLE / "graph_data",
        label_files=_builder_labels(tmp_path),
        out_dir=tmp_path / "schema",
    )

    assert [coverage[s]["usable"] for s in SPLITS] == [3, 3, 3, 0]
    assert coverage["manifest"] == {
        "verified": True,
        "ignore_metadata": False,
        "entries": 9,
        "listed_missing_on_disk": [],
    }
    meta = _read_json(tmp_path / "schema" / FEATURE_METADATA)
    assert (meta["node"]["dim"], meta["edge"]["dim"], meta["topology"]["dim"]) == (7, 4, 4)
    assert meta["module_registry"]["edge"] == "edge/legacy_band/v11"  # ids, not objects
    # the summary's builder facts, without its paths, command or timings
    assert meta["builder_summary"] == {
        "file": "graph_builder_summary.json",
        "builder": {"id": "graph_builder2", "version": "2.0.0"},
        "feature_dims": {"node_feature_dim": 7, "edge_feature_dim": 4, "topology_feature_dim": 4},
        "edge": {"processed": 9, "success": 9, "failures": 0},
        "topology": {"processed": 9, "success": 9, "failures": 0},
        "validation": {"enabled": True, "exit_code": 0},
    }
    packed = PackedSplit.load(packed_path(tmp_path / "schema" / "packed", "train"))
    assert packed.models == ["1abc_1", "1abc_2", "1abc_3"]


def test_embedded_dataset_summary_reaches_feature_metadata(
    good_run: tuple[Path, Path, dict[str, Any]],
) -> None:
    root, out, coverage = good_run
    summary = _read_json(root / "graph_builder_summary.json")
    meta = _read_json(out / FEATURE_METADATA)

    assert summary["feature_dims"]["node_feature_dim"] == NODE_DIM
    assert meta["builder_summary"]["builder"] == {"id": "graphqa.embedded", "version": 1}
    assert meta["builder_summary"]["feature_dims"] == summary["feature_dims"]
    assert coverage["manifest"]["verified"] is True


def test_verify_manifest_without_a_manifest_names_the_param(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    (root / "graphs" / GRAPH_MANIFEST).unlink()

    with pytest.raises(DataContractError) as exc:
        _run(root, tmp_path / "schema")

    assert exc.value.file == str(root / "graphs" / GRAPH_MANIFEST)
    assert exc.value.key == "schema.verify_manifest"
    assert "schema.verify_manifest: false" in str(exc.value)
    assert not (tmp_path / "schema").exists()
    coverage = _run(root, tmp_path / "schema", verify_manifest=False)
    assert coverage["manifest"] == {"verified": False}


def _tamper_graph(root: Path, mutate: Callable[[Data], None]) -> Path:
    path = root / "graph_data" / "2XYZ" / "2xyz_1.pt"
    data = load_graph(path)
    mutate(data)
    save_graph(data, path)
    return path


def _set_metadata(data: Data) -> None:
    data.metadata["edge_params"]["distance_max"] = 12.0


def _shift_x(data: Data) -> None:
    data.x[0, 0] += 1.0


@pytest.mark.parametrize("ignore", [False, True], ids=["metadata", "ignore_metadata"])
@pytest.mark.parametrize(
    ("mutate", "key"), [(_set_metadata, "metadata"), (_shift_x, "x")], ids=["metadata", "x"]
)
def test_builder_manifest_tampering_with_and_without_metadata(
    tmp_path: Path, mutate: Callable[[Data], None], key: str, ignore: bool
) -> None:
    root = _builder_copy(tmp_path)
    path = _tamper_graph(root, mutate)

    if key == "metadata" and ignore:
        _run_builder(root, tmp_path, manifest_ignore_metadata=True)
        assert _read_json(tmp_path / "schema" / "dataset_coverage.json")["manifest"][
            "ignore_metadata"
        ]
        return
    with pytest.raises(DataContractError) as exc:
        _run_builder(root, tmp_path, manifest_ignore_metadata=ignore)
    assert (exc.value.file, exc.value.key) == (str(path), key)
    assert GRAPH_MANIFEST in str(exc.value)
    assert not (tmp_path / "schema").exists()


def test_graph_missing_from_the_manifest_is_refused(tmp_path: Path) -> None:
    root = _builder_copy(tmp_path)
    shutil.copyfile(root / "graph_data/3PQR/3pqr_1.pt", root / "graph_data/3PQR/3pqr_7.pt")

    with pytest.raises(DataContractError) as exc:
        _run_builder(root, tmp_path)

    assert exc.value.file == str(root / "graph_data" / GRAPH_MANIFEST)
    assert exc.value.key == "3PQR/3pqr_7.pt"


def test_listed_graph_missing_on_disk_needs_allow_missing_graphs(tmp_path: Path) -> None:
    root = _builder_copy(tmp_path)
    (root / "graph_data/3PQR/3pqr_2.pt").unlink()
    labels = _builder_labels(tmp_path)
    frame = _read_csv(Path(labels["val_calib"]))
    _write_csv(frame[frame["MODEL"] != "3pqr_2"], Path(labels["val_calib"]))
    run = dict(graph_dir=root / "graph_data", label_files=labels, out_dir=tmp_path / "schema")

    with pytest.raises(DataContractError) as exc:
        schema_stage(**run)
    assert (exc.value.file, exc.value.key) == (
        str(root / "graph_data" / GRAPH_MANIFEST),
        "3PQR/3pqr_2.pt",
    )

    coverage = schema_stage(**run, allow_missing_graphs=True)
    assert coverage["manifest"]["listed_missing_on_disk"] == ["3PQR/3pqr_2.pt"]


def test_builder_summary_dims_must_match_the_schema(tmp_path: Path) -> None:
    root = _builder_copy(tmp_path)
    summary_file = root / "graph_builder_summary.json"
    summary = _read_json(summary_file)
    summary["feature_dims"]["edge_feature_dim"] = 5
    summary_file.write_text(json.dumps(summary))

    with pytest.raises(DataContractError) as exc:
        _run_builder(root, tmp_path)

    assert (exc.value.file, exc.value.key) == (
        str(summary_file),
        "feature_dims.edge_feature_dim",
    )
    assert not (tmp_path / "schema").exists()


def test_summary_path_file_folder_or_auto(tmp_path: Path) -> None:
    root = _builder_copy(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    summary = root / "graph_builder_summary.json"
    moved = Path(shutil.move(summary, elsewhere / "graph_builder_summary.json"))

    def summary_of(**kwargs: Any) -> Any:
        _run_builder(root, tmp_path, **kwargs)
        return _read_json(tmp_path / "schema" / FEATURE_METADATA)["builder_summary"]

    assert summary_of() is None  # auto-discovery finds nothing: fine
    assert summary_of(summary_path=str(moved))["builder"]["id"] == "graph_builder2"
    assert summary_of(summary_path=str(elsewhere))["builder"]["id"] == "graph_builder2"
    assert summary_of(summary_path=str(tmp_path)) is None  # a folder without one
    with pytest.raises(DataContractError) as exc:
        summary_of(summary_path=str(tmp_path / "nope.json"))
    assert exc.value.key == "paths.summary_path"


def test_metadata_path_points_at_a_sidecar_elsewhere(tmp_path: Path) -> None:
    root = _builder_copy(tmp_path)
    moved = Path(shutil.move(root / "graph_data" / GRAPH_METADATA, tmp_path / "meta.json"))

    _run_builder(root, tmp_path)
    assert _read_json(tmp_path / "schema" / FEATURE_METADATA)["source"] == "pt_inspection"

    _run_builder(root, tmp_path, metadata_path=str(moved))
    meta = _read_json(tmp_path / "schema" / FEATURE_METADATA)
    assert meta["source"] == GRAPH_METADATA
    assert meta["edge"]["module"] == "edge/legacy_band/v11"

    with pytest.raises(DataContractError) as exc:
        _run_builder(root, tmp_path, metadata_path=str(tmp_path / "missing.json"))
    assert exc.value.key == "paths.metadata_path"


# --------------------------------------------------------------------------------------------
# More bad inputs (not covered above): each named, nothing half-written


def _graph_of_first_model(root: Path) -> Path:
    return _graph_path(root, _first_model(root))


def inf_in_edge_attr(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.edge_attr[2, 0] = float("inf")

    return _resave(root, mutate, update_manifest=True), "edge_attr"


def edge_rows_mismatch(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.edge_attr = data.edge_attr[:-1]

    return _resave(root, mutate, update_manifest=True), "edge_attr"


def empty_graph(root: Path) -> tuple[Path, str]:
    def mutate(data: Data) -> None:
        data.x = data.x[:0]
        data.edge_index = data.edge_index[:, :0]
        data.edge_attr = data.edge_attr[:0]

    return _resave(root, mutate, update_manifest=True), "x"


def truncated_pt(root: Path) -> tuple[Path, str]:
    path = _graph_of_first_model(root)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, "<file>"


def pickle_payload(root: Path) -> tuple[Path, str]:
    path = _graph_of_first_model(root)
    data = load_graph(path)
    data.payload = _Payload(root / "marker.txt")
    torch.save(data, path)
    return path, "<file>"


def metadata_sidecar_not_json(root: Path) -> tuple[Path, str]:
    path = root / "graphs" / GRAPH_METADATA
    path.write_text(path.read_text()[:100])
    return path, "<file>"


def topology_sidecar_not_tail(root: Path) -> tuple[Path, str]:
    path = root / "graphs" / "topology_columns.json"
    path.write_text(json.dumps(["ID", *reversed(_read_json(path)[1:])]))
    return path, "<file>"


def labels_without_dockq(root: Path) -> tuple[Path, str]:
    path = _csv(root, "test")
    _write_csv(_read_csv(path).drop(columns="dockq"), path)
    return path, "dockq"


MORE_CORRUPTIONS: list[Corruption] = [
    inf_in_edge_attr,
    edge_rows_mismatch,
    empty_graph,
    truncated_pt,
    pickle_payload,
    metadata_sidecar_not_json,
    topology_sidecar_not_tail,
    labels_without_dockq,
]


@pytest.mark.parametrize("corrupt", MORE_CORRUPTIONS, ids=[c.__name__ for c in MORE_CORRUPTIONS])
def test_more_bad_inputs_fail_by_name_and_leave_previous_output(
    tiny_dataset: Path, tmp_path: Path, corrupt: Corruption
) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    out = tmp_path / "out" / "schema"
    _run(root, out)
    before = _snapshot(out)

    bad_file, key = corrupt(root)
    with pytest.raises(DataContractError) as exc:
        _run(root, out)

    assert (exc.value.file, exc.value.key) == (str(bad_file), key)
    assert len(str(exc.value).splitlines()) == 1
    assert _snapshot(out) == before
    assert [p.name for p in out.parent.glob(".*")] == []
    assert not (root / "marker.txt").exists()  # the pickle payload never ran


# --------------------------------------------------------------------------------------------
# Optional tuning split (paths.tuning_labels)


def _with_tuning(root: Path) -> dict[str, str]:
    return {**label_files(root), "tuning": str(_csv(root, "tuning"))}


def test_header_only_tuning_labels_change_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    assert _read_csv(_csv(root, "tuning")).empty  # the embedded dataset writes it header-only
    without = _run(root, tmp_path / "without")
    with_empty = schema_stage(
        graph_dir=root / "graphs", label_files=_with_tuning(root), out_dir=tmp_path / "with"
    )
    assert with_empty == without and "tuning" not in with_empty
    assert _snapshot(tmp_path / "with") == _snapshot(tmp_path / "without")


def test_tuning_split_is_packed_and_reported(tiny_dataset: Path, tmp_path: Path) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    calib = _read_csv(_csv(root, "val_calib"))
    moved = calib[calib["MODEL"].map(target_of) == "T0003"]
    _write_csv(calib.drop(moved.index), _csv(root, "val_calib"))
    _write_csv(moved, _csv(root, "tuning"))

    coverage = schema_stage(
        graph_dir=root / "graphs", label_files=_with_tuning(root), out_dir=tmp_path / "schema"
    )

    assert coverage["tuning"] == {
        "total": len(moved),
        "usable": len(moved),
        "coverage": 1.0,
        "missing_graphs": [],
    }
    assert _read_json(tmp_path / "schema" / "dataset_coverage.json")["tuning"] == coverage["tuning"]
    packed = PackedSplit.load(packed_path(tmp_path / "schema" / "packed", "tuning"))
    assert packed.models == moved["MODEL"].tolist() and set(packed.targets) == {"T0003"}
    assert len(PackedSplit.load(packed_path(tmp_path / "schema" / "packed", "val_calib"))) == (
        len(calib) - len(moved)
    )


def test_tuning_target_in_another_split_names_both_files(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_dataset, tmp_path / "dataset")
    val = _read_csv(_csv(root, "val"))
    _write_csv(val.iloc[[0]], _csv(root, "tuning"))
    _write_csv(val.iloc[1:], _csv(root, "val"))
    out = tmp_path / "schema"

    with pytest.raises(DataContractError) as exc:
        schema_stage(graph_dir=root / "graphs", label_files=_with_tuning(root), out_dir=out)

    assert exc.value.file == str(_csv(root, "tuning"))
    assert str(_csv(root, "val")) in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1 and not out.exists()


def test_schema_stage_script_fails_in_one_line(tmp_path: Path) -> None:
    """The DVC stage itself: bad input is one stderr line naming file and key, no traceback."""
    import subprocess
    import sys

    import yaml

    from .conftest import REPO

    root = _builder_copy(tmp_path)
    (root / "graph_data" / GRAPH_MANIFEST).unlink()
    labels = _builder_labels(tmp_path)
    params = {
        "paths": {
            "graph_dir": str(root / "graph_data"),
            **{f"{split}_labels": path for split, path in labels.items()},
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "schema.py"),
            "--params",
            "params.yaml",
            "--out",
            "out",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(root / "graph_data" / GRAPH_MANIFEST) in proc.stderr
    assert "'schema.verify_manifest'" in proc.stderr
    assert not (tmp_path / "data").exists()
