"""Task classes by `task.kind`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mmray.errors import ConfigError

if TYPE_CHECKING:
    from mmray.tasks.base import Task

BUILTIN_MODULES = (
    "mmray.tasks.retrieval",
    "mmray.tasks.prediction",
    "mmray.tasks.vae",
    "mmray.tasks.gan",
    "mmray.tasks.captioning",
)
_TASKS: dict[str, type[Task]] = {}


def register_task(kind: str, cls: type[Task]) -> None:
    _TASKS[kind] = cls


def task_class(kind: str) -> type[Task]:
    """The Task class of `kind` (the task config's `kind`)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    if kind not in _TASKS:
        raise ConfigError(f"no task of kind {kind!r} is registered; kinds: {', '.join(sorted(_TASKS))}")
    return _TASKS[kind]
