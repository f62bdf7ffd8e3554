"""The job spec reference in Markdown, generated from the config models themselves: every section once,
each key with its type, constraints, default and description; sections chosen by a `kind` (or a data
`source`) listed with every registered choice."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mmray.config.base import Section
from mmray.config.registry import KindRegistry

CONSTRAINTS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


@dataclass(frozen=True)
class Choice:
    """Sections one key may hold, told apart by the value of `tag` (kind, source)."""

    tag: str
    sections: tuple[type[Section], ...]


def anchor(cls: type[BaseModel]) -> str:
    return cls.__name__.lower()


def _tag_value(cls: type[BaseModel], tag: str) -> str:
    values = get_args(cls.model_fields[tag].annotation) or (cls.model_fields[tag].default,)
    return " | ".join(str(value) for value in values)


def _section_types(annotation: Any) -> list[type[Section]]:
    members = get_args(annotation) if get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, Section)]


def choice_of(info: FieldInfo) -> Choice | None:
    """The sections a field may hold when they are chosen by a tag: a discriminated union or a registry."""
    for item in info.metadata:
        registry = getattr(item.func, "__self__", None) if isinstance(item, BeforeValidator) else None
        if isinstance(registry, KindRegistry):
            return Choice("kind", tuple(registry.classes[kind] for kind in registry.kinds()))
    sections = _section_types(info.annotation)
    if info.discriminator and sections:
        return Choice(str(info.discriminator), tuple(sections))
    return None


def _link(cls: type[BaseModel], tag: str | None = None) -> str:
    label = f"{tag}: {_tag_value(cls, tag)}" if tag else cls.__name__
    return f"[{label}](#{anchor(cls)})"


def describe_type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {describe_type(args[0])}"
    if origin is tuple:
        return "(" + ", ".join(describe_type(a) for a in args if a is not Ellipsis) + ")"
    if origin is dict:
        return f"mapping {describe_type(args[0])} → {describe_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return _link(annotation)
    if annotation is Any:
        return "any"
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(annotation, str(annotation))


def _constraints(info: FieldInfo) -> str:
    shown = []
    for item in info.metadata:
        for attribute, symbol in CONSTRAINTS.items():
            bound = getattr(item, attribute, None)
            if bound is not None:
                shown.append(f"{symbol} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            shown.append(f"matching `{pattern}`")
    return f" ({', '.join(shown)})" if shown else ""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        tag = next((t for t in ("kind", "source") if t in type(value).model_fields), None)
        return f"`{tag}: {getattr(value, tag)}`" if tag else "its defaults"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_table(cls: type[BaseModel]) -> list[str]:
    """A section's heading, description and one row per key."""
    tag = next(
        (t for t in ("kind", "source") if t in cls.model_fields and get_args(cls.model_fields[t].annotation)), None
    )
    title = f"{cls.__name__} (`{tag}: {_tag_value(cls, tag)}`)" if tag else cls.__name__
    lines = [f'<a id="{anchor(cls)}"></a>', f"### {title}", "", _cell(cls.__doc__ or ""), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        choice = choice_of(info)
        if choice:
            kind = "one of: " + ", ".join(_link(s, choice.tag) for s in choice.sections)
        else:
            kind = describe_type(info.annotation) + _constraints(info)
        lines.append(f"| `{name}` | {_cell(kind)} | {_cell(_default(info))} | {_cell(info.description or '')} |")
    return [*lines, ""]


def sections_below(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every section reachable from it, each once, in the order first met."""
    seen: list[type[BaseModel]] = []
    pending = [root]
    while pending:
        cls = pending.pop(0)
        if cls in seen:
            continue
        seen.append(cls)
        for info in cls.model_fields.values():
            choice = choice_of(info)
            pending += list(choice.sections) if choice else _nested_sections(info.annotation)
    return seen


def _nested_sections(annotation: Any) -> list[type[Section]]:
    found = _section_types(annotation)
    for arg in get_args(annotation):
        found += _nested_sections(arg)
    return found


def reference_markdown(jobs: Sequence[type[BaseModel]]) -> str:
    """The reference of the given job classes and every section they use, each section once."""
    lines = [
        "# Job spec reference",
        "",
        "Generated by `mmray config schema` from the config models (`make docs` rewrites this file; a test",
        "checks it is current). Every section rejects keys it does not list. A key whose type is *one of*",
        "several sections takes a mapping with the `kind` (or `source`) of the one wanted, e.g.",
        "`model: {kind: dual_encoder, ...}`. On the command line, `section.key=value` overrides any key.",
        "",
        "Jobs: " + ", ".join(_link(job, "kind") for job in jobs),
        "",
    ]
    documented: list[type[BaseModel]] = []
    for job in jobs:
        for cls in sections_below(job):
            if cls not in documented:
                documented.append(cls)
                lines += section_table(cls)
    return "\n".join(lines).rstrip() + "\n"
