"""Training runs end to end on the tiny profile: outputs, determinism, masks, other dims, resume."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch_geometric.data import Data

from graphqa.config import Params, parse_params
from graphqa.contract import save_graph
from graphqa.data import PackedSplit
from graphqa.files import write_json
from graphqa.module import MONITOR, load_module
from graphqa.schema import schema_stage
from graphqa.train import (
    CHECKPOINT_LINKS,
    flatten_params,
    resume_run,
    selection_notice,
    train_stage,
)

from .conftest import TINY_OVERRIDES, label_files


def _train(params: Params, schema_dir: Path, run_dir: Path) -> dict[str, Any]:
    return train_stage(params=params, schema_dir=schema_dir, run_dir=run_dir)


def test_run_folder_has_checkpoints_metrics_and_summary(tiny_run: Path) -> None:
    ckpts = tiny_run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    for link in CHECKPOINT_LINKS[:2]:  # 2 epochs -> two ranked checkpoints
        assert (ckpts / link).is_symlink() and (ckpts / link).resolve().is_file()
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    summary = json.loads((tiny_run / "summary.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert len(rows) == metrics["epochs_trained"] == 2
    assert {
        "train_loss",
        "val_loss",
        "val_spearman",
        "val_regret",
        "val_hit_rate",
        "ema_val_loss",
        MONITOR,
    } <= set(rows[0])
    best = min(rows, key=lambda r: float(r[MONITOR]))
    assert summary["best_epoch"] == int(best["epoch"]) == metrics["best_epoch"]
    assert summary["best_selection_metric"] == pytest.approx(float(best[MONITOR]), abs=1e-6)
    best_file = f"epoch{int(best['epoch']):03d}.ckpt"
    assert (tiny_run / summary["checkpoint"]).resolve().name == best_file
    assert summary["schema"]["node_dim"] == 172 and summary["schema"]["edge_dim"] == 11
    assert (tiny_run / "feature_metadata.json").is_file()
    assert (tiny_run / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").is_file()


def test_same_params_give_bit_identical_weights_and_metrics(
    tiny_params: Params, tiny_schema_dir: Path, tiny_run: Path, tmp_path: Path
) -> None:
    again = tmp_path / "0-base"
    _train(tiny_params, tiny_schema_dir, again)
    assert (again / "metrics.csv").read_bytes() == (tiny_run / "metrics.csv").read_bytes()
    assert (again / "metrics.json").read_bytes() == (tiny_run / "metrics.json").read_bytes()
    for name in ("last.ckpt", "best.ckpt"):
        a = torch.load(tiny_run / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(again / "checkpoints" / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert (again / "checkpoints" / name).read_bytes() == (
            tiny_run / "checkpoints" / name
        ).read_bytes()


def test_other_seed_gives_other_weights(
    tiny_schema_dir: Path, tiny_run: Path, tmp_path: Path
) -> None:
    params = parse_params({}, {**TINY_OVERRIDES, "dataloader.seed": 99, "trainer.max_epochs": 1})
    _train(params, tiny_schema_dir, tmp_path / "run")
    a = torch.load(tiny_run / "checkpoints" / "epoch000.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "run" / "checkpoints" / "epoch000.ckpt", weights_only=True)[
        "state_dict"
    ]
    assert not torch.equal(a["net.node_encoder.weight"], b["net.node_encoder.weight"])


def test_feature_mask_prunes_first_layer_inputs(tiny_schema_dir: Path, tmp_path: Path) -> None:
    meta = json.loads((tiny_schema_dir / "feature_metadata.json").read_text())
    topo = meta["topology"]["columns"]
    kept_topo = [c for c in topo if c.startswith(("base.", "primary.s0."))]
    mask = tmp_path / "mask.json"
    write_json(mask, {"node_columns": kept_topo, "edge_columns": ["distance"]})
    params = parse_params(
        {},
        {
            **TINY_OVERRIDES,
            "trainer.max_epochs": 1,
            "feature_mask.path": str(mask),
            "feature_mask.apply_to": ["topology", "edge"],
        },
    )
    _train(params, tiny_schema_dir, tmp_path / "run")
    net = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt").net
    n_basic = meta["node"]["dim"] - meta["topology"]["dim"]
    assert net.node_encoder.in_features == n_basic + len(kept_topo)
    assert net.edge_encoder[0].in_features == 1
    assert net.config.node_dim == meta["node"]["dim"]  # still consumes full-schema graphs


def _write_custom_dataset(root: Path, node_dim: int, edge_dim: int) -> None:
    """A builder with other dims and no graph_metadata.json (schema from the .pt files)."""
    gen = torch.Generator().manual_seed(0)
    rows = {"train": [], "val": [], "val_calib": [], "test": []}
    for t, split in enumerate([s for s in rows for _ in range(2)]):
        target = f"X{t:02d}"
        for m in range(5):
            n = 6 + m
            src = torch.arange(n)
            ei = torch.stack([torch.cat([src, (src + 1) % n]), torch.cat([(src + 1) % n, src])])
            data = Data(
                x=torch.randn(n, node_dim, generator=gen) * 50,
                edge_index=ei,
                edge_attr=torch.rand(ei.shape[1], edge_dim, generator=gen),
                metadata={"edge_module": "custom/v0"},
            )
            model = f"{target}_d{m}"
            save_graph(data, root / "graphs" / target / f"{model}.pt")
            rows[split].append(f"{model},{(m + 1) / 6:.3f},")
    (root / "labels").mkdir(parents=True)
    for split, lines in rows.items():
        (root / "labels" / f"{split}.csv").write_text("MODEL,dockq,capri\n" + "\n".join(lines))


def test_other_dims_train_without_code_change(tmp_path: Path) -> None:
    _write_custom_dataset(tmp_path / "ds", node_dim=7, edge_dim=3)
    labels = {
        s: str(tmp_path / "ds" / "labels" / f"{s}.csv")
        for s in ("train", "val", "val_calib", "test")
    }
    schema_stage(  # a builder without graph_manifest.json: the check is turned off on purpose
        graph_dir=tmp_path / "ds" / "graphs",
        label_files=labels,
        out_dir=tmp_path / "schema",
        verify_manifest=False,
    )
    meta = json.loads((tmp_path / "schema" / "feature_metadata.json").read_text())
    assert (meta["node"]["dim"], meta["edge"]["dim"], meta["source"]) == (7, 3, "pt_inspection")
    params = parse_params({}, {**TINY_OVERRIDES, "trainer.max_epochs": 1})
    summary = _train(params, tmp_path / "schema", tmp_path / "run")
    assert summary["schema"]["node_dim"] == 7
    net = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt").net
    assert net.node_encoder.in_features == 7 and net.edge_encoder[0].in_features == 3
    # Train-only standardisation: the fitted means are those of the train split.
    train = PackedSplit.load(tmp_path / "schema" / "packed" / "train.pt")
    assert torch.allclose(net.node_norm.mean.float(), train.x.double().mean(0).float(), atol=1e-4)


def test_selection_notice_names_weight_and_delta() -> None:
    params = parse_params(
        {}, {"selection.spearman_weight": 0.5, "selection.spearman_min_delta": 0.1}
    )
    assert "0.5" in selection_notice(params) and "0.1" in selection_notice(params)
    off = parse_params({}, {"selection.use_val_spearman": False})
    assert "val_loss" in selection_notice(off)


def test_ddp_strategy_passes_through_on_two_cpu_processes(
    tiny_schema_dir: Path, tiny_run: Path, tmp_path: Path
) -> None:
    """`-S trainer.strategy=ddp -S trainer.devices=2` needs no code change (gloo on CPU)."""
    import subprocess
    import sys

    import yaml

    from .conftest import REPO

    params_file = tmp_path / "params.yaml"
    params = parse_params(
        {},
        {
            **TINY_OVERRIDES,
            "trainer.strategy": "ddp",
            "trainer.devices": 2,
            "trainer.max_epochs": 2,
        },
    )
    params_file.write_text(yaml.safe_dump(params.to_dict()))
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages" / "train.py"),
            "--params",
            str(params_file),
            "--seed",
            "0",
            "--schema-dir",
            str(tiny_schema_dir),
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed" in proc.stderr or "distributed" in proc.stderr.lower()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    single = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics) == set(single)  # same metrics layout as a single-process run
    assert metrics["epochs_trained"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        p.name for p in tiny_run.iterdir()
    )
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


class _Crash(Callback):
    """Simulates a run dying at the start of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resumed_run_matches_uninterrupted_run(tiny_schema_dir: Path, tmp_path: Path) -> None:
    params = parse_params({}, {**TINY_OVERRIDES, "trainer.max_epochs": 3, "model.dropout": 0.3})
    whole = train_stage(params=params, schema_dir=tiny_schema_dir, run_dir=tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_stage(
            params=params,
            schema_dir=tiny_schema_dir,
            run_dir=tmp_path / "cut",
            extra_callbacks=[_Crash(epoch=2)],
        )
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "running"
    resumed = resume_run(tmp_path / "cut")
    assert resumed["metrics"] == whole["metrics"]
    assert (tmp_path / "cut" / "metrics.csv").read_bytes() == (
        tmp_path / "whole" / "metrics.csv"
    ).read_bytes()
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        resume_run(tmp_path)


def test_mlflow_enabled_without_mlflow_warns_and_trains(
    tiny_schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails, installed or not
    params = parse_params({}, {**TINY_OVERRIDES, "trainer.max_epochs": 1, "mlflow.enabled": True})
    with pytest.warns(UserWarning, match="mlflow is not installed"):
        summary = train_stage(params=params, schema_dir=tiny_schema_dir, run_dir=tmp_path / "r")
    assert summary["metrics"]["epochs_trained"] == 1


# --------------------------------------------------------------------------------------------
# Tuning split: per-epoch tuning_* metrics, never a change to training itself


@pytest.fixture(scope="module")
def tuning_schema_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One dataset with 3 tuning targets, checked with and without ``paths.tuning_labels``."""
    from graphqa.dataset import dataset_stage

    root = tmp_path_factory.mktemp("tuning")
    split = {"train": 0.4, "val": 0.1, "val_calib": 0.1, "test": 0.1, "tuning": 0.3}
    params = parse_params({}, {**TINY_OVERRIDES, "dataset.n_targets": 10, "dataset.split": split})
    dataset_stage(cfg=params.dataset, out_dir=root / "ds")
    labels = label_files(root / "ds")
    tuning = {**labels, "tuning": str(root / "ds" / "labels" / "tuning.csv")}
    for name, files in (("with", tuning), ("without", labels)):
        schema_stage(graph_dir=root / "ds" / "graphs", label_files=files, out_dir=root / name)
    return {"with": root / "with", "without": root / "without"}


def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["state_dict"]


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _tuning_by_reload(ckpt: Path, schema_dir: Path, top_k: int) -> dict[str, float]:
    """tuning_* recomputed outside training: reloaded weights, the packed split's own loader."""
    import numpy as np

    from graphqa.data import GraphQADataModule
    from graphqa.maths.metrics import ranking_metrics

    module = load_module(ckpt)
    data = GraphQADataModule(schema_dir / "packed", batch_size=5)
    pred, true, group = [], [], []
    with torch.no_grad():
        for batch in data.loader("tuning"):
            pred.append(torch.sigmoid(module(batch)).double())
            true.append(batch.y.double())
            group.append(batch.target_id)
    p, t, g = (torch.cat(v).numpy() for v in (pred, true, group))
    ranking = ranking_metrics(p, t, g, hit_dockq=0.23, top_k=top_k)
    return {
        "tuning_rank_spearman": ranking["target_spearman"],
        "tuning_rank_regret": ranking["regret"],
        "tuning_hit_rate_023": ranking["hit_rate"],
        "tuning_dockq_mae": float(np.abs(p - t).mean()),
    }


def test_tuning_split_adds_metrics_and_leaves_training_bit_identical(
    tuning_schema_dirs: dict[str, Path], tmp_path: Path
) -> None:
    params = parse_params({}, {**TINY_OVERRIDES, "model.dropout": 0.3, "selection.hit_top_k": 2})
    tuned = _train(params, tuning_schema_dirs["with"], tmp_path / "with")
    plain = _train(params, tuning_schema_dirs["without"], tmp_path / "without")

    for name in ("epoch000.ckpt", "epoch001.ckpt", "last.ckpt"):  # dropout draws from the RNG
        a, b = _weights(tmp_path / "with", name), _weights(tmp_path / "without", name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    tuning = [f"tuning_{m}" for m in ("rank_spearman", "rank_regret", "hit_rate_023", "dockq_mae")]
    rows, plain_rows = _rows(tmp_path / "with"), _rows(tmp_path / "without")
    assert list(rows[0]) == [*plain_rows[0], *tuning]
    assert [{k: r[k] for k in plain_rows[0]} for r in rows] == plain_rows
    for row in rows:
        ckpt = tmp_path / "with" / "checkpoints" / f"epoch{int(row['epoch']):03d}.ckpt"
        expected = _tuning_by_reload(ckpt, tuning_schema_dirs["with"], top_k=2)
        for name in tuning:
            assert float(row[name]) == pytest.approx(expected[name], abs=1e-6), name

    best = next(r for r in rows if int(r["epoch"]) == tuned["best_epoch"])
    metrics = json.loads((tmp_path / "with" / "metrics.json").read_text())
    for name in tuning:
        assert metrics[name] == tuned["metrics"][name] == pytest.approx(float(best[name]), abs=1e-6)
        assert (tmp_path / "with" / "dvclive" / "plots" / "metrics" / f"{name}.tsv").is_file()
    assert tuned["tuning_groups"] == 3 and "tuning_groups" not in plain
    assert not any(k.startswith("tuning_") for k in plain["metrics"])


def test_header_only_tuning_split_gives_identical_run_outputs(
    tiny_dataset: Path, tiny_params: Params, tiny_run: Path, tmp_path: Path
) -> None:
    """The embedded dataset's header-only tuning.csv, named in paths.tuning_labels, changes
    nothing: same metrics.csv columns and bytes, same checkpoint bytes as with tuning null."""
    files = {**label_files(tiny_dataset), "tuning": str(tiny_dataset / "labels" / "tuning.csv")}
    schema_stage(graph_dir=tiny_dataset / "graphs", label_files=files, out_dir=tmp_path / "schema")
    summary = _train(tiny_params, tmp_path / "schema", tmp_path / "run")
    for name in ("metrics.csv", "metrics.json"):
        assert (tmp_path / "run" / name).read_bytes() == (tiny_run / name).read_bytes()
    for ckpt in sorted((tiny_run / "checkpoints").glob("*.ckpt")):
        assert (tmp_path / "run" / "checkpoints" / ckpt.name).read_bytes() == ckpt.read_bytes()
    assert "tuning_groups" not in summary


def test_flatten_params_gives_dotted_keys_and_yaml_like_values() -> None:
    flat = flatten_params({"a": {"b": 0.5, "c": [1, 2], "d": {}, "e": None, "f": "x"}, "g": True})
    assert flat == {
        "a.b": "0.5",
        "a.c": "[1, 2]",
        "a.d": "{}",
        "a.e": "null",
        "a.f": "x",
        "g": "true",
    }
