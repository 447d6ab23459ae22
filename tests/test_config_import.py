"""`graphqa config import`: the training stack's configs and sweep manifests -> params.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from graphqa.cli import main
from graphqa.config import Params, load_params
from graphqa.config_import import FLAT_RULES, STRUCTURED_RULES

from .conftest import REPO

# Seed 000's example config.yaml, verbatim.
SEED_000_CONFIG = """\
paths:
  graph: ../../new_graph_builder/output/.../graph_data
  train_labels: ./train.csv
  val_labels: ./val.csv
  save_dir: ./training_runs

model:
  pooling_type: mean
  attention_head: 8

dataloader:
  batch_size: 16
  num_workers: 0
  seed: 222

trainer:
  accelerator: cpu
  devices: 1
  precision: 32
  num_epochs: 200
  accumulate_grad_batches: 16

optimizer:
  learning_rate: 0.005

scheduler:
  type: reduce_on_plateau
  factor: 0.4
  patience: 12

early_stopping:
  patience: 25

selection:
  use_val_spearman: true
  spearman_min_delta: 0.0
  spearman_weight: 1.0

logging:
  progress_bar_refresh_rate: 0
  log_every_n_steps: 100

mlflow:
  enabled: false
  tracking_uri: ./mlruns
  experiment: dynamic_topoqa
  run_name: null
  log_artifacts: true
  tags: {}
"""

# The fuller form the seeds' users run: the keys issue 10 lists, added to seed 000's.
FULLER_EXTRA = """
tuning:
  labels: ./tuning.csv
coverage:
  fail_on_missing: false
  minimum_percent: 90
edge_schema:
  use_layer_norm: false
  dim: 24
metadata_path: ./graph_metadata.json
summary_path: ./graph_builder_summary.json
feature_mask:
  path: ./flt/mask_0.5.json
  apply_to: [edge, topology]
  strict: false
"""


def _fuller_config() -> str:
    text = SEED_000_CONFIG.replace(
        "  accumulate_grad_batches: 16\n",
        "  accumulate_grad_batches: 16\n"
        "  use_val_spearman_as_secondary: true\n"
        "  spearman_secondary_weight: 1.0\n",
    ).replace(
        "  spearman_weight: 1.0\n",
        "  spearman_weight: 1.0\n  primary_metric: tuning_rank_spearman\n",
    )
    return text + FULLER_EXTRA


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's params.yaml in its own folder (the working directory)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)
    return root


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _import(*argv: str) -> int:
    return main(["config", "import", *argv])


def test_seed_000_config_imports_over_params_yaml(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _write(tmp_path / "stack" / "config.yaml", _fuller_config())
    original = (repo / "params.yaml").read_text()

    assert _import(str(old), "-o", "params.yaml") == 0

    out = capsys.readouterr().out
    params = load_params(repo / "params.yaml")
    # paths keep pointing at the same files: the stack resolved them against its config folder
    assert params.paths.graph_dir == "../../new_graph_builder/output/.../graph_data"
    assert params.paths.train_labels == "../stack/train.csv"
    assert params.paths.val_labels == "../stack/val.csv"
    assert params.paths.tuning_labels == "../stack/tuning.csv"
    assert params.paths.metadata_path == "../stack/graph_metadata.json"
    assert params.paths.summary_path == "../stack/graph_builder_summary.json"
    assert params.trainer.max_epochs == 200
    assert params.trainer.accumulate_grad_batches == 16
    assert (params.dataloader.batch_size, params.dataloader.seed) == (16, 222)
    assert (params.model.pooling_type, params.model.attention_head) == ("mean", 8)
    assert params.optimizer.learning_rate == pytest.approx(0.005)
    assert (params.scheduler.factor, params.scheduler.patience) == (0.4, 12)
    assert params.early_stopping.patience == 25
    assert params.selection.use_val_spearman is True
    assert params.selection.spearman_weight == 1.0
    assert params.selection.primary_metric == "tuning_rank_spearman"
    assert params.logging.log_every_n_steps == 100
    assert params.mlflow.experiment == "dynamic_topoqa"
    assert params.mlflow.log_artifacts is True
    assert params.schema_check.allow_missing_graphs is True  # fail_on_missing: false
    assert params.schema_check.min_coverage_percent == 90.0
    assert params.edge_schema.use_layer_norm is False
    assert params.feature_mask.path == "../stack/flt/mask_0.5.json"
    assert params.feature_mask.apply_to == ["edge", "topology"]
    assert params.feature_mask.strict is False

    for line in (
        "trainer.num_epochs -> trainer.max_epochs = 200",
        "paths.graph -> paths.graph_dir = ",
        "coverage.fail_on_missing -> schema.allow_missing_graphs = true",
        "trainer.spearman_secondary_weight -> selection.spearman_weight = 1.0",
        "tuning.labels -> paths.tuning_labels = ",
        "mlflow.log_artifacts -> mlflow.log_artifacts = true",
    ):
        assert f"  {line}" in out
    assert "  paths.save_dir: DVC decides output folders" in out
    assert "  logging.progress_bar_refresh_rate: graphqa's console output is set by" in out
    assert "  edge_schema.dim: computed from the graphs' metadata" in out

    # everything the old config does not speak about is kept, comments and all
    text = (repo / "params.yaml").read_text()
    untouched_tail = original[original.index("finetune:") :]
    assert text.endswith(untouched_tail)
    assert text.splitlines()[0] == original.splitlines()[0]  # the header comment
    raw_before, raw_after = yaml.safe_load(original), yaml.safe_load(text)
    for section in ("dataset", "loss", "sweep", "finetune", "flt", "calibration", "evaluate"):
        assert raw_after[section] == raw_before[section]
    assert raw_after["trainer"]["num_threads"] == raw_before["trainer"]["num_threads"]


def test_keep_paths_leaves_current_paths(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = load_params(repo / "params.yaml").paths
    old = _write(tmp_path / "stack" / "config.yaml", _fuller_config())

    assert _import(str(old), "--keep-paths") == 0

    params = load_params(repo / "params.yaml")
    assert params.paths == before
    assert params.trainer.max_epochs == 200
    assert "paths.graph -> paths.graph_dir: current value kept" in capsys.readouterr().out
    written = (repo / "params.yaml").read_bytes()

    assert _import(str(old), "--keep-paths") == 0  # importing again changes nothing

    assert "params.yaml: already up to date, not rewritten" in capsys.readouterr().out
    assert (repo / "params.yaml").read_bytes() == written


def test_legacy_flat_config(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _write(
        tmp_path / "legacy.yaml",
        """\
graph_dir: /data/graphs
train_labels: labels/train.csv
val_label_file: labels/val.csv
save_dir: ./training_runs
batch_size: 8
num_epochs: 40
learning_rate: 0.00001
seed: 777
accumulate_grad_batches: 4
pooling_type: max
attention_head: 2
lr_scheduler_patience: 3
early_stopping_patience: 9
use_val_spearman_as_secondary: false
selection_primary_metric: val_rank_regret
progress_bar_refresh_rate: 10
coverage:
  minimum_percent: 0.8
""",
    )

    assert _import(str(old)) == 0

    out = capsys.readouterr().out
    params = load_params(repo / "params.yaml")
    assert params.paths.graph_dir == "/data/graphs"  # absolute paths stay as they are
    assert params.paths.train_labels == "../labels/train.csv"
    assert params.paths.val_labels == "../labels/val.csv"
    assert (params.dataloader.batch_size, params.dataloader.seed) == (8, 777)
    assert (params.trainer.max_epochs, params.trainer.accumulate_grad_batches) == (40, 4)
    assert isinstance(params.optimizer.learning_rate, float)
    assert params.optimizer.learning_rate == pytest.approx(1e-5)
    assert (params.model.pooling_type, params.model.attention_head) == ("max", 2)
    assert (params.scheduler.patience, params.early_stopping.patience) == (3, 9)
    assert params.selection.use_val_spearman is False
    assert params.selection.primary_metric == "val_regret"
    assert params.schema_check.min_coverage_percent == pytest.approx(80.0)
    assert "(legacy" not in out and "(flat layout)" in out
    assert "  num_epochs -> trainer.max_epochs = 40" in out
    assert "  seed -> dataloader.seed = 777" in out
    assert "  save_dir: DVC decides output folders" in out
    assert "0.8 read as a fraction" in out
    # written so that YAML 1.1 readers (graphqa's own loader) see a float, not a string
    assert "learning_rate: 1.0e-05" in (repo / "params.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "bad", "hint"),
    [
        (
            SEED_000_CONFIG.replace("num_epochs:", "num_epoch:"),
            "trainer.num_epoch",
            "trainer.num_epochs",
        ),
        (SEED_000_CONFIG + "batch_size: 4\n", "batch_size", "dataloader.batch_size"),
        ("graph_dir: g\nbatchsize: 4\n", "batchsize", "batch_size"),
    ],
    ids=["structured", "flat-key-in-structured", "flat"],
)
def test_misspelt_key_is_refused_with_a_suggestion(
    repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    bad: str,
    hint: str,
) -> None:
    old = _write(tmp_path / "old.yaml", text)
    before = (repo / "params.yaml").read_bytes()

    assert _import(str(old)) == 2

    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(old) in err and f"'{bad}'" in err and f"did you mean '{hint}'" in err
    assert captured.out == ""
    assert (repo / "params.yaml").read_bytes() == before
    assert not list(repo.glob(".params.yaml.tmp-*"))


@pytest.mark.parametrize(
    ("extra", "key", "why"),
    [
        (
            "model:\n  pooling_type: median\n",
            "model.pooling_type",
            "a valid graphqa model.pooling_type",
        ),
        (
            "trainer:\n  spearman_secondary_weight: 0.5\nselection:\n  spearman_weight: 1.0\n",
            "selection.spearman_weight",
            "the same value as 'trainer.spearman_secondary_weight'",
        ),
        ("coverage:\n  minimum_percent: fast\n", "coverage.minimum_percent", "a number"),
    ],
    ids=["invalid-value", "conflicting-keys", "wrong-type"],
)
def test_bad_values_name_the_old_key_and_write_nothing(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, key: str, why: str
) -> None:
    old = _write(tmp_path / "old.yaml", "paths:\n  graph: g\n" + extra)
    before = (repo / "params.yaml").read_bytes()

    assert _import(str(old)) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"graphqa: error: {old}: '{key}'") and why in err
    assert (repo / "params.yaml").read_bytes() == before


@pytest.mark.parametrize("pooling", ["mean", "max", "add", "attention", "sum", "mean+max"])
@pytest.mark.parametrize("layout", ["structured", "flat"])
def test_pooling_names_import(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], pooling: str, layout: str
) -> None:
    # the seeds' names (mean|max|add|attention) carry over unchanged, as do graphqa's own
    text = (
        f"paths:\n  graph: g\nmodel:\n  pooling_type: {pooling}\n"
        if layout == "structured"
        else f"graph_dir: g\npooling_type: {pooling}\n"
    )
    old = _write(tmp_path / "old.yaml", text)

    assert _import(str(old)) == 0

    params = load_params(repo / "params.yaml")
    assert params.model.pooling_type == pooling
    assert params.model.pooled_skip is False  # not a seed option: params.yaml's value kept
    assert f'-> model.pooling_type = "{pooling}"' in capsys.readouterr().out


def _sweep_files(tmp_path: Path) -> Path:
    stack = tmp_path / "stack"
    _write(stack / "config.yaml", SEED_000_CONFIG)
    # a second config in the stack's configs/ folder: paths relative to it, two settings changed
    boosted = (
        SEED_000_CONFIG.replace("./train.csv", "../train.csv")
        .replace("./val.csv", "../val.csv")
        .replace("../../new_graph_builder", "../../../new_graph_builder")
        .replace("learning_rate: 0.005", "learning_rate: 0.002")
        .replace("patience: 12", "patience: 20")
    )
    _write(stack / "configs" / "sched_boost.yaml", boosted)
    return _write(
        stack / "run_all.yaml",
        """\
jobs:
  - {name: seed101, config: config.yaml, overrides: ["seed=101"]}
  - {name: seed555, config: config.yaml, overrides: {seed: 555}}
  - {name: seed888, config: config.yaml, overrides: ["seed=888"]}
  - name: sched-boost
    config: configs/sched_boost.yaml
    notes: more patience
""",
    )


def test_sweep_manifest_becomes_seeds_and_variants(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _sweep_files(tmp_path)

    assert _import(str(tmp_path / "stack" / "config.yaml"), "--manifest", str(manifest)) == 0

    out = capsys.readouterr().out
    params = load_params(repo / "params.yaml")
    assert params.sweep.seeds == [101, 555, 888, 222]
    assert params.sweep.variants == {
        "base": {},
        "sched_boost": {"optimizer.learning_rate": 0.002, "scheduler.patience": 20},
    }
    assert "  job 'seed101' -> sweep.seeds += 101" in out
    assert "  job 'sched-boost' -> sweep.variants.sched_boost = " in out
    assert "4 seeds x 2 variants = 8 runs (the manifest listed 4 jobs)" in out
    assert "  jobs[3].notes: graphqa keeps no per-run notes" in out
    # each variant, applied as the train stage applies it, is a valid config
    variant = load_params(repo / "params.yaml", params.sweep.variants["sched_boost"])
    assert variant.optimizer.learning_rate == pytest.approx(0.002)


def test_sweep_job_cannot_move_the_shared_data(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _sweep_files(tmp_path)
    manifest.write_text(
        manifest.read_text()
        + '  - {name: elsewhere, config: config.yaml, overrides: ["paths.graph=/x"]}\n'
    )
    before = (repo / "params.yaml").read_bytes()
    old = str(tmp_path / "stack" / "config.yaml")

    assert _import(old, "--manifest", str(manifest)) == 2
    err = capsys.readouterr().err
    assert "jobs[4] (elsewhere)" in err and "share one packed dataset" in err
    assert (repo / "params.yaml").read_bytes() == before

    assert _import(old, "--manifest", str(manifest), "--keep-paths") == 0
    assert load_params(repo / "params.yaml").sweep.variants == {
        "base": {},
        "sched_boost": {"optimizer.learning_rate": 0.002, "scheduler.patience": 20},
    }


def test_misspelt_manifest_key_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _write(
        tmp_path / "stack" / "run_all.yaml",
        'jobs:\n  - {name: a, config: config.yaml, overides: ["seed=1"]}\n',
    )
    _write(tmp_path / "stack" / "config.yaml", SEED_000_CONFIG)

    assert _import(str(tmp_path / "stack" / "config.yaml"), "--manifest", str(manifest)) == 2
    err = capsys.readouterr().err
    assert "'jobs[0].overides'" in err and "did you mean 'overrides'" in err


def test_config_without_action_still_prints_the_resolved_config(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _write(tmp_path / "stack" / "config.yaml", SEED_000_CONFIG)
    assert _import(str(old), "--dry-run") == 0
    assert "dry run: params.yaml not written" in capsys.readouterr().out

    assert main(["config", "--params", "params.yaml", "--section", "trainer"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("trainer:") and "max_epochs: 30" in out  # dry run wrote nothing


def _graphqa_keys(model: type[BaseModel] = Params, prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        keys.add(key)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys |= _graphqa_keys(info.annotation, key + ".")
    return keys


@pytest.mark.parametrize("rules", [STRUCTURED_RULES, FLAT_RULES], ids=["structured", "flat"])
def test_every_mapping_target_is_a_graphqa_key(rules: dict[str, Any]) -> None:
    targets = {rule.new for rule in rules.values() if rule.new is not None}
    assert targets - _graphqa_keys() == set()
    assert all(rule.why for rule in rules.values() if rule.new is None)
