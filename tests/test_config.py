"""params.yaml loads into typed sections; bad keys and values fail loudly with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from graphqa.config import (
    ConfigError,
    Params,
    apply_overrides,
    load_params,
    parse_override,
    parse_params,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO / "params.yaml"


def _repo_raw() -> dict[str, Any]:
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    assert isinstance(raw, dict)
    return raw


def _write_params(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


# --------------------------------------------------------------------------------------------
# The real params.yaml


def test_repo_params_yaml_loads_with_its_values() -> None:
    raw = _repo_raw()

    params = load_params(PARAMS_YAML)

    assert isinstance(params, Params)
    assert isinstance(params.optimizer.learning_rate, float)
    assert params.optimizer.learning_rate == pytest.approx(raw["optimizer"]["learning_rate"])
    assert params.dataset.n_targets == raw["dataset"]["n_targets"]
    assert params.dataset.split.train == pytest.approx(raw["dataset"]["split"]["train"])
    # the `schema` section is exposed as `schema_check` (alias)
    assert params.schema_check.verify_manifest is raw["schema"]["verify_manifest"]
    assert params.schema_check.allow_missing_graphs is raw["schema"]["allow_missing_graphs"]
    assert params.model.pooling_type == raw["model"]["pooling_type"]
    assert params.trainer.max_epochs == raw["trainer"]["max_epochs"]
    assert params.scheduler.min_lr == pytest.approx(raw["scheduler"]["min_lr"])


def test_repo_params_yaml_round_trips_through_to_dict() -> None:
    """Every key in params.yaml is a schema field and loads to exactly the value written."""
    params = load_params(PARAMS_YAML)

    assert params.to_dict() == _repo_raw()
    assert parse_params(params.to_dict()) == params


# --------------------------------------------------------------------------------------------
# Unknown / misspelt keys


@pytest.mark.parametrize(
    ("dotted", "suggestion"),
    [
        ("optimizer.learning_rat", "learning_rate"),
        ("optimiser", "optimizer"),
        ("model.poling_type", "pooling_type"),
        ("schema.verify_manifst", "verify_manifest"),  # section written via its alias
        ("schem", "schema"),
        ("dataset.split.trian", "train"),
    ],
)
def test_misspelt_key_names_dotted_path_and_suggestion(
    tmp_path: Path, dotted: str, suggestion: str
) -> None:
    path = _write_params(tmp_path, _set(_repo_raw(), dotted, 1))

    with pytest.raises(ConfigError) as exc:
        load_params(path)

    message = str(exc.value)
    assert str(path) in message
    assert f"unknown key '{dotted}'" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_without_close_match_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"optimizer": {"zzzzzz": 1}})

    message = str(exc.value)
    assert "unknown key 'optimizer.zzzzzz'" in message
    assert "did you mean" not in message


def test_all_errors_are_reported_together() -> None:
    raw = {"optimiser": {}, "model": {"pooling_type": "median"}}

    with pytest.raises(ConfigError) as exc:
        parse_params(raw)

    message = str(exc.value)
    assert "'optimiser'" in message
    assert "model.pooling_type" in message


# --------------------------------------------------------------------------------------------
# Wrong types and out-of-range values


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("optimizer.learning_rate", -1),
        ("optimizer.learning_rate", 0),
        ("model.pooling_type", "median"),
        ("model.dropout", 1.0),
        ("dataloader.batch_size", "lots"),
        ("trainer.max_epochs", 0),
        ("selection.hit_dockq", 1.5),
        ("schema.verify_manifest", "maybe"),
        ("feature_mask.apply_to", ["nodes"]),
        ("dataset.label_noise", 0.9),
    ],
)
def test_bad_value_names_dotted_key(tmp_path: Path, dotted: str, value: Any) -> None:
    path = _write_params(tmp_path, _set(_repo_raw(), dotted, value))

    with pytest.raises(ConfigError) as exc:
        load_params(path)

    message = str(exc.value)
    assert str(path) in message and "\n" not in message  # one line: file, key, what's wrong
    assert f": {dotted}" in message
    assert "unknown key" not in message


def test_bad_value_error_shows_offending_value() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"optimizer": {"learning_rate": -1}})

    assert "optimizer.learning_rate" in str(exc.value)
    assert "(got -1)" in str(exc.value)


def test_inconsistent_node_range_is_rejected() -> None:
    with pytest.raises(ConfigError, match="max_nodes must be >= min_nodes"):
        parse_params({"dataset": {"min_nodes": 30, "max_nodes": 20}})


# --------------------------------------------------------------------------------------------
# Split fractions


@pytest.mark.parametrize(
    "split",
    [
        {"train": 0.7, "val": 0.15, "val_calib": 0.1, "test": 0.15},
        {"train": 0.5, "val": 0.15, "val_calib": 0.1, "test": 0.15},
    ],
)
def test_split_fractions_must_sum_to_one(split: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params({"dataset": {"split": split}})

    message = str(exc.value)
    assert "dataset.split" in message
    assert "must sum to 1" in message


def test_split_fractions_summing_to_one_are_accepted() -> None:
    split = {"train": 0.7, "val": 0.1, "val_calib": 0.1, "test": 0.1}

    params = parse_params({"dataset": {"split": split}})

    assert params.dataset.split.model_dump() == pytest.approx({**split, "tuning": 0.0})


def test_tuning_fraction_counts_towards_the_sum() -> None:
    split = {"train": 0.5, "val": 0.1, "val_calib": 0.1, "test": 0.1}
    with pytest.raises(ConfigError, match="must sum to 1"):
        parse_params({"dataset": {"split": split}})
    params = parse_params({"dataset": {"split": {**split, "tuning": 0.2}}})
    assert params.dataset.split.tuning == 0.2


def test_tuning_labels_add_a_tuning_split_only_when_set() -> None:
    assert "tuning" not in parse_params({}).paths.label_files()
    paths = parse_params({}, {"paths.tuning_labels": "labels/tuning.csv"}).paths
    assert list(paths.label_files()) == ["train", "val", "val_calib", "test", "tuning"]
    assert paths.label_files()["tuning"] == "labels/tuning.csv"


# --------------------------------------------------------------------------------------------
# Overrides


def test_dotted_overrides_apply_on_top_of_params_yaml() -> None:
    overrides = {
        "optimizer.learning_rate": 0.01,
        "model.pooling_type": "max",
        "dataset.split.train": 0.55,
        "dataset.split.val": 0.15,
        "dataset.split.val_calib": 0.1,
        "dataset.split.test": 0.2,
    }

    params = load_params(PARAMS_YAML, overrides)

    assert params.optimizer.learning_rate == pytest.approx(0.01)
    assert params.model.pooling_type == "max"
    assert params.dataset.split.train == pytest.approx(0.55)
    assert params.dataset.split.test == pytest.approx(0.2)
    # untouched keys keep the file's values
    raw = _repo_raw()
    assert params.optimizer.name == raw["optimizer"]["name"]
    assert params.dataset.n_targets == raw["dataset"]["n_targets"]
    assert params.dataset.seed == raw["dataset"]["seed"]


def test_overrides_are_validated_like_the_file() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params(_repo_raw(), {"optimizer.learning_rat": 0.1})

    assert "unknown key 'optimizer.learning_rat'" in str(exc.value)
    assert "did you mean 'learning_rate'" in str(exc.value)

    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate"):
        parse_params(_repo_raw(), {"optimizer.learning_rate": -0.5})


def test_apply_overrides_creates_sections_and_leaves_input_untouched() -> None:
    raw = {"optimizer": {"learning_rate": 0.1}}

    result = apply_overrides(raw, {"optimizer.weight_decay": 0.01, "model.hidden_dim": 8})

    assert result == {
        "optimizer": {"learning_rate": 0.1, "weight_decay": 0.01},
        "model": {"hidden_dim": 8},
    }
    assert raw == {"optimizer": {"learning_rate": 0.1}}


def test_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'learning_rate' is not a section"):
        apply_overrides({"optimizer": {"learning_rate": 0.1}}, {"optimizer.learning_rate.x": 1})


def test_parse_override_parses_values_as_yaml() -> None:
    key, value = parse_override("a.b=0.1")
    assert key == "a.b"
    assert isinstance(value, float)
    assert value == pytest.approx(0.1)

    assert parse_override("trainer.max_epochs=3") == ("trainer.max_epochs", 3)
    assert parse_override("schema.verify_manifest=false") == ("schema.verify_manifest", False)
    assert parse_override("sweep.seeds=[0, 1]") == ("sweep.seeds", [0, 1])
    assert parse_override("mlflow.run_name=a=b") == ("mlflow.run_name", "a=b")
    assert parse_override("trainer.gradient_clip_val=null") == ("trainer.gradient_clip_val", None)


def test_parse_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        parse_override("optimizer.learning_rate")


def test_command_line_overrides_feed_load_params() -> None:
    overrides = dict(
        parse_override(s) for s in ["optimizer.learning_rate=0.02", "model.num_layers=3"]
    )

    params = load_params(PARAMS_YAML, overrides)

    assert params.optimizer.learning_rate == pytest.approx(0.02)
    assert params.model.num_layers == 3


# --------------------------------------------------------------------------------------------
# Files that are not a params mapping


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as exc:
        load_params(path)

    assert str(path) in str(exc.value)
    assert "not found" in str(exc.value)


def test_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("optimizer: {learning_rate: 0.1\nmodel: [\n")

    with pytest.raises(ConfigError) as exc:
        load_params(path)

    assert str(path) in str(exc.value)
    assert "not valid YAML" in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        "- optimizer\n- model\n",
        "just a string\n",
        "42\n",
        "[]\n",
        "false\n",
    ],
)
def test_non_mapping_yaml_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as exc:
        load_params(path)

    assert str(path) in str(exc.value)
    assert "expected a mapping" in str(exc.value)


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")

    assert load_params(path) == Params()
