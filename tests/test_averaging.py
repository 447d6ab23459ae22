"""Weight averaging (variance_reduction): a shadow EMA/SWA/top-k average scored as ema_*, saved
as checkpoints/averaged.ckpt, never changing the online model; reruns and resumes exact."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graphqa.averaging import (
    AVERAGED_CKPT,
    EMA_COLUMNS,
    WeightAverager,
    average_state_dicts,
    score_averaged,
)
from graphqa.callbacks import _csv_cell
from graphqa.config import ConfigError, Params, parse_params
from graphqa.data import GraphQADataModule
from graphqa.module import load_module
from graphqa.train import resume_run, train_stage

from .conftest import TINY_OVERRIDES
from .test_train import _Crash

# Dropout on: the RNG is drawn every step, so any extra draw by averaging would show.
BASE = {**TINY_OVERRIDES, "trainer.max_epochs": 3, "model.dropout": 0.3}
METHODS = ("ema", "swa", "topk_avg")


def _params(method: str, **settings: Any) -> Params:
    extra = {f"variance_reduction.{k}": v for k, v in settings.items()}
    return parse_params({}, {**BASE, "variance_reduction.method": method, **extra})


def _train(params: Params, schema_dir: Path, run_dir: Path) -> dict[str, Any]:
    return train_stage(params=params, schema_dir=schema_dir, run_dir=run_dir)


@pytest.fixture(scope="module")
def runs(tiny_schema_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 3-epoch run per method, same seed and data."""
    root = tmp_path_factory.mktemp("averaging")
    for method in ("none", *METHODS):
        _train(_params(method), tiny_schema_dir, root / method)
    return {method: root / method for method in ("none", *METHODS)}


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(a: Any, b: Any) -> bool:
    """Exact equality of nested checkpoint content (tensors bit for bit, NaN == NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _val_graphs(schema_dir: Path) -> list[Any]:
    return GraphQADataModule(schema_dir / "packed", batch_size=8).graphs("val")


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# The online model is untouched


@pytest.mark.parametrize("method", METHODS)
def test_online_training_is_bit_identical_to_method_none(
    runs: dict[str, Path], method: str
) -> None:
    none, run = runs["none"], runs[method]
    names = sorted(p.name for p in (none / "checkpoints").glob("*.ckpt") if not p.is_symlink())
    assert names == ["epoch000.ckpt", "epoch001.ckpt", "epoch002.ckpt", "last.ckpt"]
    for name in names:
        a, b = _ckpt(none / "checkpoints" / name), _ckpt(run / "checkpoints" / name)
        # weights, optimizer, scheduler, RNG, loops: all but the averager's state and ema_* log
        b["callbacks"].pop("WeightAverager", None)
        for row in b["callbacks"]["EpochMetricsCSV"]["rows"]:
            for column in EMA_COLUMNS:
                row.pop(column, None)
        assert _same(a, b), name
    plain = _rows(none)
    assert [{k: r[k] for k in plain[0]} for r in _rows(run)] == plain  # val_* are the online's
    online = {k: v for k, v in _json(run / "metrics.json").items() if not k.startswith("ema_")}
    assert online == _json(none / "metrics.json")
    assert not any(k.startswith("ema_") for k in plain[0])
    assert _json(none / "summary.json")["averaged"] is None
    assert not (none / "checkpoints" / AVERAGED_CKPT).exists()


def test_topk_avg_leaves_checkpoint_bytes_unchanged(runs: dict[str, Path]) -> None:
    checkpoints = sorted((runs["none"] / "checkpoints").glob("epoch*.ckpt"))
    assert len(checkpoints) >= 2, "too few epoch checkpoints to compare"
    for ckpt in checkpoints:
        assert (runs["topk_avg"] / "checkpoints" / ckpt.name).read_bytes() == ckpt.read_bytes()


# --------------------------------------------------------------------------------------------
# The averaged checkpoint: saved, reloadable, reproduces its metrics


@pytest.mark.parametrize("method", METHODS)
def test_averaged_checkpoint_reloads_and_reproduces_its_metrics(
    runs: dict[str, Path], tiny_schema_dir: Path, method: str
) -> None:
    run = runs[method]
    summary = _json(run / "summary.json")
    averaged = summary["averaged"]
    assert averaged["method"] == method
    assert averaged["checkpoint"] == f"checkpoints/{AVERAGED_CKPT}"
    ckpt_path = run / averaged["checkpoint"]
    module = load_module(ckpt_path)

    rescored = score_averaged(module, _val_graphs(tiny_schema_dir), batch_size=8)
    logged = {k: math.nan if v is None else v for k, v in averaged["metrics"].items()}
    assert set(rescored) == set(EMA_COLUMNS)
    assert _same(rescored, logged)  # exactly, not approximately
    metrics = _json(run / "metrics.json")
    for name in EMA_COLUMNS:
        expected = None if math.isnan(rescored[name]) else round(rescored[name], 6)
        assert metrics[name] == summary["metrics"][name] == expected, name

    # An independent path (the val DataLoader, as in test_module) agrees.
    data = GraphQADataModule(tiny_schema_dir / "packed", batch_size=8)
    with torch.no_grad():
        pairs = [(torch.sigmoid(module(b)).double(), b.y.double()) for b in data.val_dataloader()]
    pred, true = (torch.cat(v) for v in zip(*pairs, strict=True))
    assert float(((pred - true) ** 2).mean()) == pytest.approx(rescored["ema_val_loss"], abs=1e-9)

    # A normal checkpoint: same hyper-parameters and standardiser buffers as the online one.
    best = _ckpt(run / "checkpoints" / "best.ckpt")
    saved = _ckpt(ckpt_path)
    assert saved["hyper_parameters"] == best["hyper_parameters"]
    assert saved["state_dict"].keys() == best["state_dict"].keys()
    for key in [k for k in best["state_dict"] if "_norm." in k]:
        assert torch.equal(saved["state_dict"][key], best["state_dict"][key]), key
    online = [_ckpt(p)["state_dict"] for p in (run / "checkpoints").glob("epoch*.ckpt")]
    assert online, "no online checkpoints to compare the average with"
    assert not any(_same(saved["state_dict"], s) for s in online)  # really an average


@pytest.mark.parametrize("method", ["ema", "swa"])
def test_ema_and_swa_log_every_epoch_and_keep_the_best_averaged_state(
    runs: dict[str, Path], tiny_schema_dir: Path, method: str
) -> None:
    run = runs[method]
    rows = _rows(run)
    assert list(rows[0])[-len(EMA_COLUMNS) :] == list(EMA_COLUMNS)
    assert all(rows[0][c] == "" for c in EMA_COLUMNS)  # epoch 0 < start_epoch 1
    scored = [r for r in rows if r["ema_selection_metric"]]
    assert [int(r["epoch"]) for r in scored] == [1, 2]
    best = min(scored, key=lambda r: (float(r["ema_selection_metric"]), int(r["epoch"])))
    averaged = _json(run / "summary.json")["averaged"]
    assert (
        averaged["best_epoch"]
        == int(best["epoch"])
        == _ckpt(run / "checkpoints" / AVERAGED_CKPT)["epoch"]
    )
    assert _json(run / "metrics.json")["ema_best_epoch"] == averaged["best_epoch"]
    for name in EMA_COLUMNS:  # the csv shows the logged (float32) value of the same number
        value = averaged["metrics"][name]
        shown = _csv_cell(float(np.float32(math.nan if value is None else value)))
        assert best[name] == shown, name
    assert averaged["start_epoch"] == 1 and averaged["n_averaged"] > 0
    plots = run / "dvclive" / "plots" / "metrics"
    assert (plots / "ema_val_loss.tsv").is_file()
    assert "ema_selection_metric" in _json(run / "dvclive" / "metrics.json")


def test_topk_avg_is_the_mean_of_the_k_best_checkpoints(runs: dict[str, Path]) -> None:
    run = runs["topk_avg"]
    averaged = _json(run / "summary.json")["averaged"]
    assert averaged["best_epoch"] is None and averaged["topk"] == 3
    ranked = _json(run / "summary.json")["ranked_checkpoints"]
    assert averaged["source_checkpoints"] == [(run / r).resolve().name for r in ranked]
    sources = [_ckpt(run / "checkpoints" / n)["state_dict"] for n in averaged["source_checkpoints"]]
    saved = _ckpt(run / "checkpoints" / AVERAGED_CKPT)["state_dict"]
    assert _same(saved, average_state_dicts(sources))
    assert not any(k in _rows(run)[0] for k in EMA_COLUMNS)  # scored once, not per epoch
    assert "ema_val_loss" in _json(run / "dvclive" / "metrics.json")


def test_ema_with_decay_zero_is_the_online_model(tiny_schema_dir: Path, tmp_path: Path) -> None:
    _train(_params("ema", ema_decay=0.0), tiny_schema_dir, tmp_path / "run")
    for row in _rows(tmp_path / "run")[1:]:
        for name in EMA_COLUMNS:
            assert row[name] == row[name.removeprefix("ema_")], (row["epoch"], name)
    averaged = _json(tmp_path / "run" / "summary.json")["averaged"]
    online = _ckpt(tmp_path / "run" / "checkpoints" / f"epoch{averaged['best_epoch']:03d}.ckpt")
    saved = _ckpt(tmp_path / "run" / "checkpoints" / AVERAGED_CKPT)
    assert _same(saved["state_dict"], online["state_dict"])


def test_nothing_averaged_before_start_epoch(tiny_schema_dir: Path, tmp_path: Path) -> None:
    summary = _train(_params("ema", start_epoch=5), tiny_schema_dir, tmp_path / "run")
    assert summary["averaged"] is None
    assert "start_epoch 5" in summary["averaged_note"]
    assert not (tmp_path / "run" / "checkpoints" / AVERAGED_CKPT).exists()
    assert not any(k.startswith("ema_") for k in summary["metrics"])


# --------------------------------------------------------------------------------------------
# Reruns and resumes


def test_rerun_gives_bit_identical_averaged_checkpoint_and_metrics(
    runs: dict[str, Path], tiny_schema_dir: Path, tmp_path: Path
) -> None:
    _train(_params("ema"), tiny_schema_dir, tmp_path / "again")
    for name in ("metrics.csv", "metrics.json"):
        assert (tmp_path / "again" / name).read_bytes() == (runs["ema"] / name).read_bytes()
    checkpoints = sorted((runs["ema"] / "checkpoints").glob("*.ckpt"))
    assert checkpoints, "the run wrote no checkpoints to compare"
    for ckpt in checkpoints:
        assert (tmp_path / "again" / "checkpoints" / ckpt.name).read_bytes() == ckpt.read_bytes()
    again = _json(tmp_path / "again" / "summary.json")["averaged"]
    assert again == _json(runs["ema"] / "summary.json")["averaged"]


@pytest.mark.parametrize(
    "settings", [{"method": "ema"}, {"method": "swa", "swa_lr": 0.01}], ids=["ema", "swa_lr"]
)
def test_resumed_run_matches_uninterrupted_run_with_averaging(
    tiny_schema_dir: Path, tmp_path: Path, settings: dict[str, Any]
) -> None:
    params = _params(**settings)
    whole = _train(params, tiny_schema_dir, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_stage(
            params=params,
            schema_dir=tiny_schema_dir,
            run_dir=tmp_path / "cut",
            extra_callbacks=[_Crash(epoch=2)],  # after averaging started at epoch 1
        )
    resumed = resume_run(tmp_path / "cut")
    assert resumed["averaged"] == whole["averaged"]
    assert resumed["metrics"] == whole["metrics"]
    for name in ("metrics.csv", "metrics.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    averaged = [_ckpt(tmp_path / run / "checkpoints" / AVERAGED_CKPT) for run in ("whole", "cut")]
    assert _same(*averaged)
    a, b = (_ckpt(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "cut"))
    # weights, optimizer and every callback's state (the averager's included); the epoch
    # scheduler's step counters are Lightning's own (it saves before stepping them)
    for key in ("state_dict", "optimizer_states", "callbacks"):
        assert _same(a[key], b[key]), key
    if "swa_lr" in settings:  # SWALR took over the schedule at start_epoch, also after resume
        lrs = [float(r["lr"]) for r in _rows(tmp_path / "cut")]
        assert lrs == pytest.approx([0.003, 0.01, 0.01])


def test_batch_norm_is_refused_rather_than_averaged_silently() -> None:
    """Averaged weights with batch norm need its statistics recomputed; graphqa's network has
    none, and a network that had would be refused instead of scored wrongly."""
    params = _params("ema")
    averager = WeightAverager(params.variance_reduction, [], batch_size=8, checkpoint_dir=".")
    net: Any = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="batch norm"):
        averager.setup(None, net, "fit")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# topk_avg's averaging function


def test_average_of_identical_checkpoints_is_that_checkpoint(runs: dict[str, Path]) -> None:
    state = _ckpt(runs["none"] / "checkpoints" / "best.ckpt")["state_dict"]
    assert _same(average_state_dicts([state, state, state]), state)


def test_average_of_two_state_dicts_is_their_mean() -> None:
    a = {"w": torch.tensor([1.0, -2.0, 0.5]), "index": torch.tensor([0, 3]), "b": torch.ones(2)}
    b = {"w": torch.tensor([3.0, 2.0, 0.25]), "index": torch.tensor([0, 3]), "b": torch.ones(2)}
    mean = average_state_dicts([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 0.0, 0.375]))
    assert mean["w"].dtype == torch.float32
    assert torch.equal(mean["index"], a["index"]) and mean["index"].dtype == torch.int64
    assert torch.equal(mean["b"], a["b"])


def test_average_refuses_mismatched_state_dicts() -> None:
    with pytest.raises(ValueError, match="other keys"):
        average_state_dicts([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])
    with pytest.raises(ValueError, match="non-floating"):
        average_state_dicts([{"i": torch.tensor([1])}, {"i": torch.tensor([2])}])
    with pytest.raises(ValueError, match="no state dicts"):
        average_state_dicts([])


# --------------------------------------------------------------------------------------------
# Config


def test_defaults() -> None:
    vr = parse_params({}).variance_reduction
    assert (vr.method, vr.ema_decay, vr.start_epoch, vr.swa_lr, vr.topk) == (
        "ema",
        0.99,
        1,
        None,
        3,
    )


def test_unknown_method_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"variance_reduction\.method.*did you mean 'swa'"):
        parse_params({}, {"variance_reduction.method": "sw"})
    with pytest.raises(ConfigError, match=r"unknown key 'variance_reduction\.decay'"):
        parse_params({}, {"variance_reduction.decay": 0.9})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variance_reduction.swa_lr": 0.01}, "swa_lr applies to method swa only"),
        ({"variance_reduction.ema_decay": 1.0}, "ema_decay"),
        (
            {"variance_reduction.method": "none", "selection.primary_metric": "ema_val_regret"},
            "variance_reduction.method is none",
        ),
        (
            {"variance_reduction.method": "none", "selection.shortlist.enabled": True},
            r"selection\.shortlist\.by is ema_val_loss",
        ),
    ],
)
def test_inconsistent_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params({}, overrides)


def test_method_none_with_the_default_disabled_shortlist_loads() -> None:
    assert (
        parse_params({}, {"variance_reduction.method": "none"}).selection.shortlist.enabled is False
    )
