"""Typed configuration: strict pydantic sections, YAML loading, dotted overrides, YAML dumping."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mmray.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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


class AttentionSection(Section):
    """Base of sections with attention, which splits `width` evenly over `heads`."""

    @model_validator(mode="after")
    def _heads_split_the_width(self) -> Self:
        width, heads = (getattr(self, name) for name in ("width", "heads"))
        if width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads: make width a multiple of heads")
        return self


SectionT = TypeVar("SectionT", bound=BaseModel)


def of_kind(config: Any, expected: type[SectionT], what: str) -> SectionT:
    """`config` as the `expected` section class, or a TypeError naming `what` was expected and the kind given."""
    if not isinstance(config, expected):
        raise TypeError(f"expected {what} config, got kind {config.kind!r}")
    return config


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


def format_validation_error(error: ValidationError, source: str, data: Any = None) -> str:
    """Render pydantic errors as one line per problem: `source: where: what (got value)`."""
    lines = []
    for item in error.errors():
        where = _format_location(item["loc"], data, item["type"] == "missing")
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, Mapping) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {where}: {message}{shown}")
    return "\n".join(lines)


def first_problem(error: ValidationError) -> str:
    """pydantic's first error as `where: what` (`the file` for the whole document), for a damaged file."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the file"
    return f"{where}: {first['msg']}"


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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, then what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem or exc.context}"
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return f"character {exc.position + 1} is U+{code:04X}: {exc.reason}"
    return " ".join(str(exc).split())


def read_yaml_file(path: str | Path, what: str = "job spec") -> Any:
    """The content of a UTF-8 YAML file; a directory, a missing, unreadable, binary or empty file, or
    invalid YAML is a one-line ConfigError naming the file."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{file}: it is a directory; name a {what} YAML file in it")
    if not file.is_file():
        raise ConfigError(f"{what} file {str(file)!r} does not exist")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not a text file (byte {exc.start} is 0x{raw[exc.start]:02x}, not UTF-8); a {what} is a "
            "UTF-8 YAML file"
        ) from None
    if not text.strip():
        raise ConfigError(f"{file} is empty; a {what} is a YAML mapping of sections (kind: ..., name: ...)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {_yaml_problem(exc)}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a job spec YAML file whose top level must be a mapping."""
    data = read_yaml_file(path)
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: top level must be a mapping of sections (kind: ..., name: ...), got {kind}")
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
