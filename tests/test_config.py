from __future__ import annotations

import pytest
import yaml

from pixelseg.config import apply_overrides, dump_config, load_config, parse_config
from pixelseg.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    config = parse_config({})
    assert config.data.dataset == "synthetic"
    assert config.train.optimizer.name == "adamw"
    path = dump_config(config, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == config


def test_unknown_key_names_key_and_closest(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"train": {"epoch": 3}})
    message = str(info.value)
    assert "'train.epoch'" in message
    assert "did you mean 'epochs'" in message


def test_unknown_nested_key_in_list(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_config({"loss": {"terms": [{"name": "dice", "wieght": 2}]}})
    assert "loss.terms.0.wieght" in str(info.value)
    assert "'weight'" in str(info.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"batch_size": "many"}})
    assert "data.batch_size" in str(info.value) and "'many'" in str(info.value)


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 2}, "loss": {"terms": [{"name": "ce"}]}}))
    config = load_config(
        path,
        [
            "train.epochs=5",
            "train.optimizer.lr=0.01",
            "loss.terms.0.weight=0.5",
            "model.encoder=null",
        ],
    )
    assert config.train.epochs == 5
    assert config.train.optimizer.lr == pytest.approx(0.01)
    assert config.loss.terms[0].weight == 0.5
    with pytest.raises(ConfigError, match=r"train\.epocs"):
        load_config(path, ["train.epocs=5"])
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="list index"):
        load_config(path, ["loss.terms.3.weight=1"])


def test_override_does_not_mutate_input():
    raw = {"train": {"epochs": 1}}
    apply_overrides(raw, ["train.epochs=9"])
    assert raw == {"train": {"epochs": 1}}


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_folder_dataset_needs_directories():
    with pytest.raises(ConfigError, match=r"data\.images"):
        parse_config({"data": {"dataset": "folder", "classes": ["a", "b"]}})
