"""Several processes changing one registry at once keep every change, locally (a lock file beside it) and
on S3 (writes conditional on the version read); a lock held past the wait is named, not waited on forever."""

from __future__ import annotations

import fcntl
import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from mmray.errors import StorageError
from mmray.pipeline.registry import ModelRegistry
from tests.support.registry_writers import add_and_record

WRITERS, RECORDS = 3, 30


def _write_at_once(storage_root: str) -> ModelRegistry:
    """WRITERS processes each adding an entry and recording RECORDS events, all started together."""
    registry = ModelRegistry(storage_root)
    registry.evaluated("bundle", "model-first", None, None, {}, "first", True)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    writers = [context.Process(target=add_and_record, args=(storage_root, i, RECORDS, start)) for i in range(WRITERS)]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(300)
    assert [writer.exitcode for writer in writers] == [0] * WRITERS
    return registry


def _assert_all_kept(registry: ModelRegistry) -> None:
    content = registry.read()
    assert [entry.id for entry in content.entries] == list(range(1, WRITERS + 2))
    assert sorted(entry.model_version for entry in content.entries[1:]) == [f"model-{i}" for i in range(WRITERS)]
    assert Counter(event.by for event in content.events) == {f"writer {i}": RECORDS for i in range(WRITERS)}


@pytest.mark.slow
def test_writers_in_several_processes_keep_every_change_locally(tmp_path: Path) -> None:
    _assert_all_kept(_write_at_once(str(tmp_path / "runs")))


@pytest.mark.slow
def test_writers_in_several_processes_keep_every_change_on_s3(s3_env: str) -> None:
    _assert_all_kept(_write_at_once(f"{s3_env}/runs"))


def test_a_registry_lock_held_past_the_wait_is_named(tmp_path: Path) -> None:
    registry = ModelRegistry(str(tmp_path), lock_timeout_s=0.5)
    registry.evaluated("bundle", "model", None, None, {}, "job", True)
    lock = tmp_path / "registry" / ".registry.lock"
    with open(lock, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(StorageError, match=rf"{lock}: another writer held the lock for 0\.5 s"):
            registry.record(1, "promote", "waiting")
    assert registry.read().events == []
    registry.record(1, "promote", "after")
    assert [event.by for event in registry.read().events] == ["after"]
