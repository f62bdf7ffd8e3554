"""Config families chosen by `kind` (models, tasks), open to new kinds registered at import time."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Generic

from mmray.config.base import SectionT


class KindRegistry(Generic[SectionT]):
    """Config classes of one family by the literal default of their `kind` field. `validate` is a pydantic
    before-validator: a mapping becomes its kind's instance, an instance passes, anything else is rejected."""

    def __init__(self, family: str, base: type[SectionT]) -> None:
        self.family = family
        self.base = base
        self.classes: dict[str, type[SectionT]] = {}

    def register(self, cls: type[SectionT]) -> type[SectionT]:
        kind = cls.model_fields["kind"].default
        if not isinstance(kind, str):
            raise TypeError(f"{cls.__name__}.kind needs a string default naming its kind")
        if kind in self.classes and self.classes[kind] is not cls:
            raise ValueError(f"{self.family} kind {kind!r} is already registered by {self.classes[kind].__name__}")
        self.classes[kind] = cls
        return cls

    def kinds(self) -> list[str]:
        return sorted(self.classes)

    def validate(self, data: Any) -> Any:
        if isinstance(data, self.base):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a {self.family} section (a mapping with a 'kind'), got {data!r}")
        kind = data.get("kind")
        if kind is None:
            raise ValueError(f"missing 'kind'; {self.family} kinds: {', '.join(self.kinds())}")
        cls = self.classes.get(str(kind))
        if cls is None:
            hint = difflib.get_close_matches(str(kind), self.kinds(), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"unknown {self.family} kind {kind!r}{suggestion}; {self.family} kinds: {', '.join(self.kinds())}"
            )
        return cls.model_validate(dict(data))
