"""Recipe config resolution: types from files and from `--set`, errors that name the key."""
from dataclasses import dataclass
from typing import Optional

import pytest

from recipes.config import ConfigError, read_config_file, resolve, save_config


@dataclass
class Example:
    categories: tuple[str, ...] = ("a",)
    limit: Optional[int] = None
    lr: float = 1e-3
    flag: bool = False
    name: str = "x"


def test_file_values_of_every_field_type_round_trip(tmp_path):
    config = resolve(Example, {"categories": ["p", "q"], "limit": 3, "lr": 1, "flag": True})
    assert config == Example(("p", "q"), 3, 1.0, True, "x")
    path = tmp_path / "config.json"
    save_config(config, path, recipe="demo")
    settings = read_config_file(path)
    assert settings.pop("recipe") == "demo"
    assert resolve(Example, settings) == config


def test_set_overrides_parse_text():
    config = resolve(Example, {}, ["categories=m, n", "limit=none", "lr=0.5", "flag=yes", "name=y=z"])
    assert config == Example(("m", "n"), None, 0.5, True, "y=z")


@pytest.mark.parametrize("settings, overrides, message", [
    ({"limt": 1}, (), "unknown config key 'limt'"),
    ({"lr": "fast"}, (), "config key 'lr' expects float"),
    ({"flag": 1}, (), "config key 'flag' expects bool"),
    ({"categories": 5}, (), "config key 'categories' expects tuple"),
    ({}, ["flag=maybe"], "config key 'flag' expects true or false"),
])
def test_errors_name_the_key(settings, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(Example, settings, overrides)


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(ConfigError, match="is not valid toml"):
        read_config_file(bad)
