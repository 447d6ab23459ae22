"""The builder's manifest scheme: the independent fixture verifies, tampering is named, order is not
hashed, and a hand-built graph hashes to what the issue's literal recipe gives."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from graphqa.contract import GRAPH_MANIFEST, DataContractError, load_graph, save_graph
from graphqa.manifest import (
    canonicalise,
    check_folder,
    format_report,
    manifest_entry,
    metadata_digest,
    tensor_digest,
    verify_entry,
)

from .conftest import BUILDER_SAMPLE

FIXTURE = BUILDER_SAMPLE
FIXTURE_GRAPHS = FIXTURE / "graph_data"
FIXTURE_KEYS = [f"{t}/{t.lower()}_{i}.pt" for t in ("1ABC", "2XYZ", "3PQR") for i in (1, 2, 3)]


def _copy_graphs(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE_GRAPHS, tmp_path / "graph_data"))


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# The independently written fixture


def test_fixture_verifies_every_field_of_every_graph() -> None:
    report = check_folder(FIXTURE_GRAPHS)

    assert report.ok, report.problems
    assert report.graphs == 9
    assert report.fields == {"x": 9, "edge_index": 9, "edge_attr": 9, "metadata": 9}
    assert sorted(_read(FIXTURE_GRAPHS / GRAPH_MANIFEST)) == FIXTURE_KEYS


def test_written_manifest_is_byte_identical_to_the_builders(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    (root / GRAPH_MANIFEST).unlink()

    report = check_folder(root, write=True)

    assert report.ok
    assert (root / GRAPH_MANIFEST).read_bytes() == (FIXTURE_GRAPHS / GRAPH_MANIFEST).read_bytes()
    assert check_folder(root).ok


def test_written_manifest_without_metadata_is_the_builders_ignore_form(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)

    assert check_folder(root, write=True, ignore_metadata=True).ok

    expected = {
        key: {f: d for f, d in entry.items() if f != "metadata"}
        for key, entry in _read(FIXTURE_GRAPHS / GRAPH_MANIFEST).items()
    }
    assert _read(root / GRAPH_MANIFEST) == expected
    # entries without a metadata key are accepted as they are, metadata ignored or not
    assert check_folder(root).ok
    assert check_folder(root, ignore_metadata=True).ok


# --------------------------------------------------------------------------------------------
# Tampering: each refused, naming graph and field


def _change_tensor(root: Path) -> tuple[str, str]:
    path = root / "2XYZ" / "2xyz_2.pt"
    data = load_graph(path)
    data.x[3, 2] += 0.5
    save_graph(data, path)
    return "2XYZ/2xyz_2.pt", "x"


def _change_edge_attr(root: Path) -> tuple[str, str]:
    path = root / "3PQR" / "3pqr_1.pt"
    data = load_graph(path)
    data.edge_attr[0, 1] = 0.123
    save_graph(data, path)
    return "3PQR/3pqr_1.pt", "edge_attr"


def _add_graph(root: Path) -> tuple[str, str]:
    shutil.copyfile(root / "1ABC" / "1abc_1.pt", root / "1ABC" / "1abc_4.pt")
    return "1ABC/1abc_4.pt", "1ABC/1abc_4.pt"


def _remove_graph(root: Path) -> tuple[str, str]:
    (root / "3PQR" / "3pqr_2.pt").unlink()
    return "3PQR/3pqr_2.pt", "3PQR/3pqr_2.pt"


def _change_metadata(root: Path) -> tuple[str, str]:
    path = root / "1ABC" / "1abc_3.pt"
    data = load_graph(path)
    data.metadata["edge_params"]["distance_max"] = 12.0
    save_graph(data, path)
    return "1ABC/1abc_3.pt", "metadata"


TAMPERS: list[Callable[[Path], tuple[str, str]]] = [
    _change_tensor,
    _change_edge_attr,
    _add_graph,
    _remove_graph,
    _change_metadata,
]


@pytest.mark.parametrize("ignore_metadata", [False, True], ids=["metadata", "ignore_metadata"])
@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__.strip("_") for t in TAMPERS])
def test_tampered_copy_is_refused_naming_graph_and_field(
    tmp_path: Path, tamper: Callable[[Path], tuple[str, str]], ignore_metadata: bool
) -> None:
    root = _copy_graphs(tmp_path)
    graph, field = tamper(root)

    report = check_folder(root, ignore_metadata=ignore_metadata)

    if field == "metadata" and ignore_metadata:
        assert report.ok, report.problems  # skipped on purpose
        return
    assert not report.ok
    assert [(p.graph, p.field) for p in report.problems] == [(graph, field)]
    assert graph in report.problems[0].message
    assert f"'{field}'" in report.problems[0].message
    assert "FAILED: 1 problem(s) in 1 graph(s)" in format_report(report, write=False)[-1]


def test_field_listed_but_absent_is_named(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    manifest = _read(root / GRAPH_MANIFEST)
    manifest["2XYZ/2xyz_1.pt"]["edge_weight"] = "0" * 64
    (root / GRAPH_MANIFEST).write_text(json.dumps(manifest))

    problems = check_folder(root).problems

    assert [(p.graph, p.field) for p in problems] == [("2XYZ/2xyz_1.pt", "edge_weight")]
    assert "absent" in problems[0].message


def test_unknown_field_in_an_entry_is_not_skipped(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    manifest = _read(root / GRAPH_MANIFEST)
    manifest["2XYZ/2xyz_1.pt"]["pos"] = "0" * 64
    (root / GRAPH_MANIFEST).write_text(json.dumps(manifest))

    problems = check_folder(root).problems

    assert [(p.graph, p.field) for p in problems] == [("2XYZ/2xyz_1.pt", "pos")]


def test_malformed_manifest_names_the_entry(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    manifest = _read(root / GRAPH_MANIFEST)
    manifest["1ABC/1abc_2.pt"]["x"] = "not-a-digest"
    (root / GRAPH_MANIFEST).write_text(json.dumps(manifest))

    with pytest.raises(DataContractError) as exc:
        check_folder(root)

    assert exc.value.file == str(root / GRAPH_MANIFEST)
    assert exc.value.key == "1ABC/1abc_2.pt"


def test_workers_report_the_same_problems_in_the_same_order(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    for tamper in (_change_tensor, _change_edge_attr, _change_metadata, _add_graph):
        tamper(root)

    serial = check_folder(root, workers=1)
    pooled = check_folder(root, workers=2)

    assert pooled.problems == serial.problems
    assert [p.graph for p in serial.problems] == [
        "1ABC/1abc_4.pt",  # coverage first
        "1ABC/1abc_3.pt",
        "2XYZ/2xyz_2.pt",
        "3PQR/3pqr_1.pt",
    ]


def test_progress_reports_counts_and_an_eta() -> None:
    stream = io.StringIO()

    check_folder(FIXTURE_GRAPHS, progress=stream, progress_interval=0.0)

    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("validate: 9/9 graphs")
    assert all("ETA" in line for line in lines)


def test_embedded_dataset_manifest_uses_the_scheme_with_metadata(tiny_dataset: Path) -> None:
    report = check_folder(tiny_dataset / "graphs")

    assert report.ok, report.problems[:3]
    assert report.fields["metadata"] == report.graphs > 0


# --------------------------------------------------------------------------------------------
# The canonical form


def _permuted(data: Data, seed: int) -> Data:
    """The same graph with its nodes and edges stored in another order."""
    gen = torch.Generator().manual_seed(seed)
    n, e = data.x.shape[0], data.edge_index.shape[1]
    node_perm = torch.randperm(n, generator=gen)  # new position i holds old node node_perm[i]
    new_id = torch.empty(n, dtype=torch.long)
    new_id[node_perm] = torch.arange(n)
    edge_perm = torch.randperm(e, generator=gen)
    return Data(
        x=data.x[node_perm],
        edge_index=new_id[data.edge_index][:, edge_perm],
        edge_attr=data.edge_attr[edge_perm],
        metadata=data.metadata,
    )


@pytest.mark.parametrize("key", FIXTURE_KEYS[:4])
def test_node_and_edge_order_is_not_hashed(key: str) -> None:
    original = load_graph(FIXTURE_GRAPHS / key)
    shuffled = _permuted(original, seed=3)
    assert not torch.equal(shuffled.x, original.x)

    assert manifest_entry(shuffled) == manifest_entry(original)
    verify_entry(shuffled, _read(FIXTURE_GRAPHS / GRAPH_MANIFEST)[key], key)


def _literal_digest(dtype: str, shape: str, raw: bytes) -> str:
    return hashlib.sha256(dtype.encode() + shape.encode() + raw).hexdigest()


def test_hand_built_graph_hashes_by_the_literal_recipe() -> None:
    # nodes 0, 1, 2 sort to rows [0, 2] (old 2), [0, 5] (old 1), [1, 0] (old 0): new ids 2, 1, 0
    data = Data(
        x=torch.tensor([[1.0, 0.0], [0.0, 5.0], [0.0, 2.0]]),
        edge_index=torch.tensor([[0, 1, 2, 0], [1, 2, 0, 1]]),
        edge_attr=torch.tensor([[0.5], [0.25], [0.75], [0.125]]),
        metadata={"b": 1, "a": [1.5, "x"]},
    )
    # renumbered edges (2,1 .5) (1,0 .25) (0,2 .75) (2,1 .125); sorted by (src, dst, attr)
    x = np.array([[0.0, 2.0], [0.0, 5.0], [1.0, 0.0]], dtype=np.float32)
    edge_index = np.array([[0, 1, 2, 2], [2, 0, 1, 1]], dtype=np.int64)
    edge_attr = np.array([[0.75], [0.25], [0.125], [0.5]], dtype=np.float32)
    expected = {
        "x": _literal_digest("torch.float32", "(3, 2)", x.tobytes()),
        "edge_index": _literal_digest("torch.int64", "(2, 4)", edge_index.tobytes()),
        "edge_attr": _literal_digest("torch.float32", "(4, 1)", edge_attr.tobytes()),
        "metadata": hashlib.sha256(b'{"a": [1.5, "x"], "b": 1}').hexdigest(),
    }

    assert manifest_entry(data) == expected
    assert metadata_digest(data.metadata) == expected["metadata"]
    assert tensor_digest(torch.zeros(57)) == _literal_digest(
        "torch.float32", "(57,)", bytes(57 * 4)
    )


def test_batch_follows_nodes_and_edge_weight_is_hashed_as_stored() -> None:
    data = Data(
        x=torch.tensor([[2.0], [1.0]]),
        edge_index=torch.tensor([[0], [1]]),
        edge_weight=torch.tensor([3.0]),
        batch=torch.tensor([7, 8]),
    )

    canonical = canonicalise(data)

    assert canonical["x"].tolist() == [[1.0], [2.0]]
    assert canonical["batch"].tolist() == [8, 7]
    assert canonical["edge_index"].tolist() == [[1], [0]]
    assert canonical["edge_weight"].tolist() == [3.0]
    assert set(manifest_entry(data)) == {"x", "edge_index", "edge_weight", "batch"}


def test_without_nodes_edges_are_sorted_without_renumbering() -> None:
    data = Data(edge_index=torch.tensor([[2, 0, 2], [1, 5, 0]]))

    assert canonicalise(data)["edge_index"].tolist() == [[0, 2, 2], [5, 0, 1]]


def test_signed_zeros_tie_and_keep_their_original_order() -> None:
    """Lexicographic order is numeric: -0.0 == 0.0, so the original index decides."""
    first = canonicalise(Data(x=torch.tensor([[0.0, 1.0], [-0.0, 1.0], [-1.0, 2.0]])))["x"]
    second = canonicalise(Data(x=torch.tensor([[-0.0, 1.0], [0.0, 1.0], [-1.0, 2.0]])))["x"]

    assert torch.signbit(first[:, 0]).tolist() == [True, False, True]
    assert torch.signbit(second[:, 0]).tolist() == [True, True, False]
    assert first[0].tolist() == second[0].tolist() == [-1.0, 2.0]


def test_missing_manifest_says_how_to_write_one(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    (root / GRAPH_MANIFEST).unlink()

    with pytest.raises(DataContractError, match="--write-manifest"):
        check_folder(root)


def test_manifest_kept_elsewhere_still_names_graphs_under_the_folder(tmp_path: Path) -> None:
    root = _copy_graphs(tmp_path)
    elsewhere = tmp_path / "manifests" / "m.json"
    assert check_folder(root, elsewhere, write=True).ok
    (root / "1ABC" / "1abc_2.pt").unlink()

    problems = check_folder(root, elsewhere).problems

    assert [(p.graph, p.field) for p in problems] == [("1ABC/1abc_2.pt", "1ABC/1abc_2.pt")]
    assert str(root / "1ABC" / "1abc_2.pt") in problems[0].message
    assert str(elsewhere) in problems[0].message
