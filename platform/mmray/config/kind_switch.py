"""Merging overrides into a job where an override changes a section's `kind` (or a data section's
`source`): that section keeps only the keys its new kind accepts, and the keys dropped are named.
Whole sections may be given as mappings (`model.fusion={kind: gated, hidden: 64}`)."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from mmray.config.base import deep_merge


def _section_classes(annotation: Any, metadata: list[Any]) -> list[type[BaseModel]]:
    """The config classes a field may hold: members of a union, or a kind registry's classes."""
    for item in metadata:
        registry = getattr(getattr(item, "func", None), "__self__", None)
        if registry is not None and hasattr(registry, "classes"):
            return list(registry.classes.values())
    found: list[type[BaseModel]] = []
    pending = [annotation]
    while pending:
        current = pending.pop()
        if isinstance(current, type) and issubclass(current, BaseModel):
            found.append(current)
        elif typing.get_origin(current) in (typing.Union, types.UnionType, typing.Annotated):
            pending.extend(typing.get_args(current))
    return found


TAGS = ("kind", "source")


def _tag_of(classes: list[type[BaseModel]]) -> str:
    """The key that tells a section's classes apart: `kind`, or `source` for data sections."""
    return next((tag for tag in TAGS if classes and all(tag in c.model_fields for c in classes)), "kind")


def _kinds_of(cls: type[BaseModel], tag: str = "kind") -> tuple[str, ...]:
    field = cls.model_fields.get(tag)
    if field is None:
        return ()
    literal = typing.get_args(field.annotation)
    return tuple(str(value) for value in literal) or ((str(field.default),) if field.default else ())


def _field_classes(model: type[BaseModel], key: str) -> tuple[list[type[BaseModel]], str]:
    """The config classes field `key` of `model` may hold, and the key that tells them apart."""
    field = model.model_fields.get(key)
    if field is None:
        return [], "kind"
    candidates = _section_classes(field.annotation, list(field.metadata))
    return candidates, _tag_of(candidates)


def _class_for(candidates: list[type[BaseModel]], tag: str, kind: Any) -> type[BaseModel] | None:
    """The class among `candidates` for a section of `kind` (None when it has no kinds)."""
    if kind is None:
        return candidates[0] if len(candidates) == 1 else None
    return next((cls for cls in candidates if str(kind) in _kinds_of(cls, tag)), None)


def merge_switching_kinds(
    base: Mapping[str, Any], updates: Mapping[str, Any], model: type[BaseModel], path: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """`deep_merge(base, updates)`, except that a section whose `kind` changes keeps only the keys its
    new kind's class accepts; returns the merged mapping and the dropped keys (dotted)."""
    merged = dict(base)
    dropped: list[str] = []
    for key, value in updates.items():
        where = f"{path}.{key}" if path else key
        current = merged.get(key)
        if not (isinstance(value, Mapping) and isinstance(current, Mapping)):
            merged = deep_merge(merged, {key: value}, path)
            continue
        candidates, tag = _field_classes(model, key)
        old_kind, new_kind = current.get(tag), value.get(tag, current.get(tag))
        cls = _class_for(candidates, tag, new_kind)
        if new_kind != old_kind and cls is not None:
            kept = {name: item for name, item in current.items() if name in cls.model_fields}
            dropped.extend(f"{where}.{name}" for name in current if name not in cls.model_fields)
            current = kept
        if cls is None:
            merged[key] = deep_merge(current, value, where)
            continue
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
        candidates, tag = _field_classes(cls, part)
        cls = _class_for(candidates, tag, node.get(tag) if isinstance(node, Mapping) else None)
    return cls is None or leaf in cls.model_fields
