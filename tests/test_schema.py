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
    manifest_entry,
    save_graph,
    target_of,
)
from graphqa.data import SPLITS, PackedSplit, packed_path
from graphqa.schema import FEATURE_METADATA, FeatureSchema, check_dataset

from .conftest import label_files

NODE_DIM = 172
EDGE_DIM = 11
TOPO_DIM = 140


# --------------------------------------------------------------------------------------------
# Helpers


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _run(root: Path, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
    return check_dataset(
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
