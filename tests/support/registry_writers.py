"""A writer of the model registry for tests that run several at once, each in a process of its own."""

from __future__ import annotations

from multiprocessing.synchronize import Event

from mmray.pipeline.registry import ModelRegistry


def add_and_record(storage_root: str, writer: int, records: int, start: Event) -> None:
    """Once `start` is set: add one entry of this writer's own, then record `records` promotions of entry 1."""
    registry = ModelRegistry(storage_root)
    start.wait(60)
    registry.evaluated("bundle", f"model-{writer}", None, None, {}, f"writer {writer}", True)
    for _ in range(records):
        registry.record(1, "promote", f"writer {writer}")
