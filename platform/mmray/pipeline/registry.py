"""The model registry under a storage root: every (model, index) pair a pipeline evaluated and which pair is
served (promotions and rollbacks in order). One JSON file, `<storage_root>/registry/registry.json`, rewritten
whole and atomically on each change. Writers may run at once (pipelines, people's `mmray models` commands):
each change is a read-modify-write that keeps the others' (`registry_store`: a lock file locally, conditional
writes on S3)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from mmray import storage
from mmray.config.base import first_problem
from mmray.errors import ConfigError
from mmray.pipeline.registry_store import change_file

REGISTRY = "registry/registry.json"
LOCK_TIMEOUT_S = 60.0
"""How long a local change waits for another writer's before it gives up."""
T = TypeVar("T")


@dataclass
class RegistryEntry:
    """A candidate pair: its bundles and versions, the gate's scores, and whether the gate let it through."""

    id: int
    model_bundle: str
    model_version: str
    index_bundle: str | None
    index_version: str | None
    metrics: dict[str, Any]
    job: str
    created_at: str
    passed_gate: bool


@dataclass
class RegistryEvent:
    entry: int
    action: str  # promote | rollback
    at: str
    by: str


@dataclass
class Registry:
    entries: list[RegistryEntry] = field(default_factory=list)
    events: list[RegistryEvent] = field(default_factory=list)


_FORMAT = TypeAdapter(Registry)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ModelRegistry:
    """Read and change the registry of one storage root."""

    def __init__(self, storage_root: str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.uri = storage.join(storage_root, REGISTRY)
        self.lock_timeout_s = lock_timeout_s

    def read(self) -> Registry:
        return self._parse(storage.read_bytes(self.uri)) if storage.exists(self.uri) else Registry()

    def _parse(self, content: bytes) -> Registry:
        try:
            return _FORMAT.validate_json(content)
        except ValidationError as exc:
            raise ConfigError(
                f"the registry {self.uri} is damaged or not what mmray wrote ({first_problem(exc)})"
            ) from None

    def _change(self, change: Callable[[Registry], T]) -> T:
        """Apply `change` to the registry as it is now and write it, other writers' changes kept."""

        def rewrite(content: bytes | None) -> tuple[bytes, T]:
            registry = Registry() if content is None else self._parse(content)
            result = change(registry)
            data = {"entries": [asdict(e) for e in registry.entries], "events": [asdict(e) for e in registry.events]}
            return json.dumps(data, indent=2).encode("utf-8"), result

        return change_file(self.uri, rewrite, self.lock_timeout_s)

    def entry(self, entry_id: int) -> RegistryEntry:
        return self._entry_in(self.read(), entry_id)

    def _entry_in(self, registry: Registry, entry_id: int) -> RegistryEntry:
        for entry in registry.entries:
            if entry.id == entry_id:
                return entry
        raise ConfigError(f"the registry at {self.uri} has no entry {entry_id}; `mmray models list` shows them")

    def current(self) -> RegistryEntry | None:
        """The entry served now: on top of the promotions, each rollback having undone the latest."""
        stack = _served(self.read())
        return self.entry(stack[-1]) if stack else None

    def find(self, model_version: str, index_version: str | None) -> RegistryEntry | None:
        return _pair_in(self.read(), model_version, index_version)

    def evaluated(
        self,
        model_bundle: str,
        model_version: str,
        index_bundle: str | None,
        index_version: str | None,
        metrics: dict[str, Any],
        job: str,
        passed_gate: bool,
    ) -> RegistryEntry:
        """The pair's entry after an evaluation: a known pair's scores and gate decision updated, a new one added."""

        def note(registry: Registry) -> RegistryEntry:
            entry = _pair_in(registry, model_version, index_version)
            if entry is None:
                entry = RegistryEntry(len(registry.entries) + 1, model_bundle, model_version, index_bundle,
                                      index_version, metrics, job, _now(), passed_gate)  # fmt: skip
                registry.entries.append(entry)
            else:
                entry.metrics, entry.passed_gate = metrics, passed_gate
            return entry

        return self._change(note)

    def record(self, entry_id: int, action: str, by: str) -> None:
        """A promotion or rollback of `entry_id` (after the app, if any, serves it)."""

        def append(registry: Registry) -> None:
            self._entry_in(registry, entry_id)
            registry.events.append(RegistryEvent(entry_id, action, _now(), by))

        self._change(append)

    def previous(self) -> RegistryEntry:
        """What a rollback returns to: the entry promoted before the current one."""
        stack = _served(self.read())
        if len(stack) < 2:
            raise ConfigError("nothing to roll back to: no entry was promoted before the one served now")
        return self.entry(stack[-2])


def _pair_in(registry: Registry, model_version: str, index_version: str | None) -> RegistryEntry | None:
    return next((e for e in registry.entries
                 if e.model_version == model_version and e.index_version == index_version), None)  # fmt: skip


def _served(registry: Registry) -> list[int]:
    """The promoted entries still in force, oldest first: a promotion pushes, a rollback pops."""
    stack: list[int] = []
    for event in registry.events:
        if event.action == "promote":
            stack.append(event.entry)
        elif stack:
            stack.pop()
    return stack
