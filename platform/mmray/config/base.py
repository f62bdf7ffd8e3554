"""Typed configuration: strict pydantic sections, YAML loading, dotted overrides, YAML dumping."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mmray.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected with the list of valid ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            valid = sorted(cls.model_fields)
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                key = unknown[0]
                hint = difflib.get_close_matches(str(key), valid, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"unknown key {key!r}{suggestion}; valid keys: {', '.join(valid)}")
        return data


SectionT = TypeVar("SectionT", bound=BaseModel)


def _format_location(loc: Sequence[int | str], data: Any, missing: bool = False) -> str:
    """Dotted path of an error; union tags that pydantic inserts (absent from the input) are dropped.
    `missing`: the last item is a required key the input lacks, kept."""
    parts: list[str] = []
    node = data
    for position, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, Sequence) and item < len(node) else None
            continue
        last = position == len(loc) - 1
        if isinstance(node, Mapping) and item not in node and (parts or not last) and not (missing and last):
            continue
        parts.append(f".{item}" if parts else item)
        node = node.get(item) if isinstance(node, Mapping) else None
    return "".join(parts).lstrip(".") or "<top level>"


def format_validation_error(error: ValidationError, source: str, data: Any = None, union_tag: bool = False) -> str:
    """Render pydantic errors as one line per problem: `source: where: what (got value)`.
    `union_tag`: the first location item is the tag of a discriminated union, not a key."""
    lines = []
    for item in error.errors():
        where = _format_location(item["loc"][1:] if union_tag else item["loc"], data, item["type"] == "missing")
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, Mapping) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {where}: {message}{shown}")
    return "\n".join(lines)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn `a.b=c` strings into a nested dict; values are parsed as YAML scalars or lists."""
    tree: dict[str, Any] = {}
    for text in overrides:
        key, sep, raw_value = text.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {text!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw_value) if raw_value else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r} conflicts with an earlier override of {part!r}")
            node = child
        node[leaf] = value
    return tree


def deep_merge(base: Mapping[str, Any], updates: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """Merge `updates` into a copy of `base`; a mapping may not be replaced by a scalar."""
    merged = dict(base)
    for key, value in updates.items():
        where = f"{path}.{key}" if path else key
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value, where)
        elif isinstance(current, Mapping) and not isinstance(value, Mapping) and value is not None:
            keys = sorted(current)
            raise ConfigError(
                f"override {where}={value!r}: {where!r} is a section with keys {', '.join(keys)}; "
                f"set one of them, e.g. {where}.{keys[0] if keys else 'key'}=..."
            )
        else:
            merged[key] = value
    return merged


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{str(file)!r} is a directory; name a job spec YAML file in it")
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def validate(model: type[SectionT], data: Mapping[str, Any], source: str) -> SectionT:
    """Validate `data` against `model`, raising ConfigError with readable messages."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, data)) from None


def to_yaml(config: BaseModel) -> str:
    """Dump a config as YAML that loads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
