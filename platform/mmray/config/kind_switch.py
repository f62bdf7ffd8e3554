"""Which sections a field may hold, chosen by `kind` (or `source`), and merging overrides that switch a kind."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from mmray.config.registry import KindRegistry
from mmray.errors import ConfigError


class Choice(NamedTuple):
    """Sections one key may hold, told apart by the value of `tag` (kind, source)."""

    tag: str
    sections: tuple[type[BaseModel], ...]


def union_members(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a type names: itself or its union's members (not those inside a list or dict)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def choice_of(info: FieldInfo) -> Choice | None:
    """The sections a field may hold when a tag chooses them: a kind registry's or a discriminated union's."""
    for item in info.metadata:
        registry = getattr(item.func, "__self__", None) if isinstance(item, BeforeValidator) else None
        if isinstance(registry, KindRegistry):
            return Choice("kind", tuple(registry.classes[kind] for kind in registry.kinds()))
    sections = union_members(info.annotation)
    if info.discriminator and sections:
        return Choice(str(info.discriminator), tuple(sections))
    return None


def kinds_of(cls: type[BaseModel], tag: str = "kind") -> tuple[str, ...]:
    """The values of `tag` that choose `cls`: its literal's, else its default."""
    field = cls.model_fields.get(tag)
    if field is None:
        return ()
    literal = typing.get_args(field.annotation)
    return tuple(str(value) for value in literal) or ((str(field.default),) if field.default else ())


def _field_choice(model: type[BaseModel] | None, key: str) -> Choice:
    """The sections field `key` of `model` may hold; a plain section field holds its one class."""
    field = model.model_fields.get(key) if model else None
    if field is None:
        return Choice("kind", ())
    return choice_of(field) or Choice("kind", tuple(union_members(field.annotation)))


def _class_for(choice: Choice, kind: Any) -> type[BaseModel] | None:
    """The section of `choice` for `kind` (None when it has no kinds)."""
    if kind is None:
        return choice.sections[0] if len(choice.sections) == 1 else None
    return next((cls for cls in choice.sections if str(kind) in kinds_of(cls, choice.tag)), None)


def merge_switching_kinds(
    base: Mapping[str, Any], updates: Mapping[str, Any], model: type[BaseModel] | None, path: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Merge `updates` into a copy of `base` (a mapping may not be replaced by a scalar), except that a
    section of `model` whose `kind` changes keeps only the keys its new kind's class accepts; returns the
    merged mapping and the dropped keys (dotted). Below a `model` of None, nothing is dropped."""
    merged = dict(base)
    dropped: list[str] = []
    for key, value in updates.items():
        where = f"{path}.{key}" if path else key
        current = merged.get(key)
        if not (isinstance(value, Mapping) and isinstance(current, Mapping)):
            if isinstance(current, Mapping) and value is not None:
                keys = sorted(current)
                raise ConfigError(
                    f"override {where}={value!r}: {where!r} is a section with keys {', '.join(keys)}; "
                    f"set one of them, e.g. {where}.{keys[0] if keys else 'key'}=..."
                )
            merged[key] = value
            continue
        choice = _field_choice(model, key)
        old_kind, new_kind = current.get(choice.tag), value.get(choice.tag, current.get(choice.tag))
        cls = _class_for(choice, new_kind)
        if new_kind != old_kind and cls is not None:
            dropped.extend(f"{where}.{name}" for name in current if name not in cls.model_fields)
            current = {name: item for name, item in current.items() if name in cls.model_fields}
        merged[key], inner = merge_switching_kinds(current, value, cls, where)
        dropped.extend(inner)
    return merged, dropped


def field_accepted(model: type[BaseModel], data: Mapping[str, Any], dotted: str) -> bool:
    """Whether the section holding `dotted` (its class chosen by the data's kinds) has that field;
    True where the schema cannot tell (free-form mappings)."""
    *parents, leaf = dotted.split(".")
    cls: type[BaseModel] | None = model
    node: Any = data
    for part in parents:
        if cls is None or part not in cls.model_fields:
            return cls is None
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
        choice = _field_choice(cls, part)
        cls = _class_for(choice, node.get(choice.tag) if isinstance(node, Mapping) else None)
    return cls is None or leaf in cls.model_fields
