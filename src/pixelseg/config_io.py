"""Reading, overriding, validating and writing experiment configs (the schema is
:mod:`pixelseg.config`): YAML files and ``key.sub=value`` overrides become an
:class:`~pixelseg.config.ExperimentConfig`, with errors that name the key and the closest
valid one. The schema is imported where it is used: :mod:`pixelseg.config` re-exports these
functions, so importing either module first works."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from pixelseg.errors import ConfigError, closest_match

if TYPE_CHECKING:
    from pixelseg.config import ExperimentConfig

__all__ = ["apply_overrides", "dump_config", "load_config", "parse_config"]


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that ``loc`` (a pydantic error location) points into."""
    from pixelseg.config import ExperimentConfig

    model: Any = ExperimentConfig
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(part) for part in loc) or "<root>"
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc)
            hint = closest_match(str(loc[-1]), valid)
            did_you_mean = f"; did you mean {hint!r}?" if hint else ""
            lines.append(
                f"unknown key {dotted!r}{did_you_mean} (valid keys here: {', '.join(valid)})"
            )
        else:
            lines.append(f"{dotted}: {item['msg']} (got {item.get('input')!r})")
    return f"invalid config {source}: " + "; ".join(lines)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig` with readable errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source} must be a mapping at the top level, got {type(raw)}")
    try:
        from pixelseg.config import ExperimentConfig

        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {dotted!r}: {where!r} is not a valid list index")
            node = node[int(part)]
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {dotted!r}: {where!r} holds a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {dotted!r}: {last!r} is not a valid list index")
        node[int(last)] = value
    else:
        node[last] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    result = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({error})") from None
        _set_dotted(result, key, value)
    return result


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply ``key.sub=value`` overrides, and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, source=repr(str(path)))


def dump_config(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (every default spelled out) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
