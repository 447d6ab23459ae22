"""MLflow tracking for real: a local file store, read back through mlflow's own client.

Needs the optional extra (``pip install -e .[mlflow]``; ``make test`` installs it). Without it
these tests skip; the fallback without mlflow is tested in test_train.py.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from graphqa.config import Params, parse_params
from graphqa.train import flatten_params, train_stage

from .conftest import TINY_OVERRIDES

pytest.importorskip("mlflow", reason="mlflow not installed (optional extra: .[mlflow])")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _mlflow_run(
    tmp_path: Path, tiny_schema_dir: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> tuple[Any, Any, Path, Params]:
    """Train with MLflow on (cwd: an empty folder) and return (client, mlflow run, run dir)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # graphqa opts in itself
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    store = tmp_path / "store"
    params = parse_params(
        {},
        {
            **TINY_OVERRIDES,
            "mlflow.enabled": True,
            "mlflow.tracking_uri": str(store),
            "mlflow.experiment": "tiny",
            "mlflow.tags": {"purpose": "test"},
            **overrides,
        },
    )
    run_dir = tmp_path / "run"
    train_stage(params=params, schema_dir=tiny_schema_dir, run_dir=run_dir, run_name="0-base")
    client = MlflowClient(tracking_uri=str(store))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1
    return client, runs[0], run_dir, params


def test_run_is_logged_and_read_back_with_mlflows_client(
    tiny_schema_dir: Path, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run, run_dir, params = _mlflow_run(tmp_path, tiny_schema_dir, monkeypatch)

    assert run.info.status == "FINISHED" and run.info.run_name == "0-base"
    assert run.data.tags["purpose"] == "test"
    logged = run.data.params
    assert logged["optimizer.learning_rate"] == "0.003"
    assert logged["model.hidden_dim"] == "16"
    assert logged["sweep.seeds"] == "[0]" and logged["run.seed"] == "222"
    assert logged.items() >= flatten_params(params.to_dict()).items()

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == len(rows) == 2  # one value per epoch
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(
        [float(r["val_loss"]) for r in rows], abs=1e-6
    )

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    ckpts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"feature_metadata.json", "dataset_coverage.json", "checkpoints"} <= top
    # 2 epochs: the two ranked checkpoints, plus the weight-averaged model (method ema)
    assert ckpts == {
        "checkpoints/best.ckpt",
        "checkpoints/second_best.ckpt",
        "checkpoints/averaged.ckpt",
    }
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    assert (local / "checkpoints" / "best.ckpt").read_bytes() == (
        run_dir / "checkpoints" / "best.ckpt"
    ).read_bytes()
    assert (local / "dataset_coverage.json").read_bytes() == (
        tiny_schema_dir / "dataset_coverage.json"
    ).read_bytes()
    assert (local / "feature_metadata.json").read_bytes() == (
        run_dir / "feature_metadata.json"
    ).read_bytes()

    # MLflow writes only under tracking_uri: nothing in the cwd, nothing extra in the run
    # folder, and the run's checkpoints and metrics are those of the same run without MLflow.
    assert list((tmp_path / "cwd").iterdir()) == []
    with_mlflow, without = _files(run_dir), _files(tiny_run)
    assert with_mlflow.keys() == without.keys()
    for name in without:
        if name.startswith("checkpoints/") or name in ("metrics.csv", "metrics.json"):
            assert with_mlflow[name] == without[name], name


def test_log_artifacts_false_logs_metrics_but_no_files(
    tiny_schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run, _, _ = _mlflow_run(
        tmp_path,
        tiny_schema_dir,
        monkeypatch,
        **{"mlflow.log_artifacts": False, "trainer.max_epochs": 1},
    )
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    assert client.list_artifacts(run.info.run_id) == []
