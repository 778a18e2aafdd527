"""Recipe configs: a dataclass of defaults, overridden from a file and `--set key=value`.

A config is plain data, so the fully resolved one is saved as JSON next to the
checkpoint and a run can be repeated or resumed from it exactly.
"""
import dataclasses
import json
import math
import pathlib
import tomllib
import types
import typing

from easyfit.core.serialization import parse_json


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says which and why."""


def _field_types(config_class):
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


def _is_union(kind):
    """Optional[X], Union[X, Y] and X | Y (not a generic like tuple[str, ...])."""
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _convert(name, text, kind):
    """Parse a command-line string into the field's declared type."""
    origin = typing.get_origin(kind)
    if _is_union(kind):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        kind = options[0]
        origin = typing.get_origin(kind)
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config key '{name}' expects true or false, got {text!r}")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"config key '{name}' expects {kind.__name__}, got {text!r}") from None
    if origin in (tuple, list):
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        inner = typing.get_args(kind)[0] if typing.get_args(kind) else str
        values = [_convert(name, p.strip(), inner) for p in parts]
        return tuple(values) if origin is tuple else values
    raise ConfigError(f"config key '{name}' has a type ({kind}) that cannot be set from text")


def _check_value(name, value, kind):
    """Check a value read from a JSON/TOML file against the field's type."""
    if isinstance(value, str) and kind is not str:
        return _convert(name, value, kind)
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base in (tuple, list) and isinstance(value, (list, tuple)):
            return base(value)
        if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"config key '{name}' expects {getattr(kind, '__name__', kind)}, "
                      f"got {value!r} ({type(value).__name__})")


def _unknown(name, config_class):
    known = ", ".join(sorted(_field_types(config_class)))
    return ConfigError(f"unknown config key '{name}' for {config_class.__qualname__} (known keys: {known})")


def read_config_file(path):
    """A dict of settings from a .json or .toml file."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".json", ".toml"):
        raise ConfigError(f"config file {path}: easyfit reads .json and .toml config files, not "
                          f"{path.suffix or 'files without an extension'}; write the settings as JSON or TOML")
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            settings = tomllib.loads(text.decode("utf-8"))
        else:
            settings = parse_json(text, f"config file {path}")
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to parse") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"config file {path} must hold a table of key = value settings at its top level, "
                          f"not a {type(settings).__name__}")
    return settings


def resolve(config_class, file_settings=None, overrides=(), **arguments):
    """Defaults, then a config file's settings, then named arguments, then `key=value` pairs."""
    types = _field_types(config_class)
    values = {}
    for name, value in (file_settings or {}).items():
        if name not in types:
            raise _unknown(name, config_class)
        values[name] = _check_value(name, value, types[name])
    for name, value in arguments.items():
        if value is not None:
            if name not in types:
                raise _unknown(name, config_class)
            values[name] = _check_value(name, value, types[name])
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        name, text = item.split("=", 1)
        name = name.strip()
        if name not in types:
            raise _unknown(name, config_class)
        values[name] = _convert(name, text.strip(), types[name])
    config = config_class(**values)
    check_values(config)
    return config


# Settings that mean the same in every recipe, checked once here (before any data is read
# or any training is done): name -> (test, what it must be).
_RULES = {
    **{name: (lambda v: v >= 1, "at least 1") for name in (
        "epochs", "bs", "width", "size", "hidden", "emb_dim", "layers", "heads", "ff_dim", "max_len", "bptt",
        "emb_size", "hidden_size", "num_layers", "chunk_chars", "max_vocab", "max_chars")},
    "lr": (lambda v: v > 0, "a positive, finite learning rate"),
    "valid_pct": (lambda v: 0 < v < 1, "between 0 and 1 (exclusive): training needs a validation set"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    **{name: (lambda v: v >= 0, "at least 0") for name in ("wd", "clip", "crop_padding", "min_freq")},
}


def check_values(config):
    """Refuse values no run can use (lr=inf, width=0, valid_pct=0...) with the key named: exit 2
    now beats a crash after training, or a diverged model."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{field.name}' must be a finite number, got {value}")
        rule = _RULES.get(field.name)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"config key '{field.name}' must be {rule[1]}, got {value}")


def to_dict(config):
    return dataclasses.asdict(config)


def save_config(config, path, **extra):
    """Write the resolved config (plus `extra` keys) as JSON, atomically: never half-written."""
    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".tmp")
    data = {**extra, **to_dict(config)}
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
