"""Changing one file read-modify-write while other processes change it too. Locally the change runs under an
exclusive lock on a file beside it (`fcntl.flock`, waited for a bounded time); on S3 it is written only if
the object is still the version read (a conditional write), and read and made again when another writer
came first."""

from __future__ import annotations

import contextlib
import fcntl
import posixpath
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from mmray import storage
from mmray.errors import StorageError

T = TypeVar("T")
S3_TRIES = 40
"""Conditional writes one change may try on S3 before it gives up (each after a short random wait)."""


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; StorageError after `timeout_s`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(f"{path}: another writer held the lock for {timeout_s:g} s (a lock ends "
                                       "with its process); retry when that writer is done") from None  # fmt: skip
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def change_file(uri: str, change: Callable[[bytes | None], tuple[bytes, T]], lock_timeout_s: float) -> T:
    """Apply `change` (the file's content, None when there is none -> the new content and a result) so that
    no other writer's change made meanwhile is lost; return its result."""
    if not storage.is_s3(uri):
        with file_lock(Path(uri).with_name(f".{Path(uri).stem}.lock"), lock_timeout_s):
            content, result = change(storage.read_bytes(uri) if storage.exists(uri) else None)
            storage.write_bytes(uri, content)
            return result
    for attempt in range(S3_TRIES):
        found = storage.read_versioned(uri)
        content, result = change(found[0] if found else None)
        if storage.write_bytes_if(uri, content, found[1] if found else None):
            return result
        time.sleep(random.uniform(0.0, min(1.0, 0.02 * 2**attempt)))
    raise StorageError(f"{uri}: other writers changed {posixpath.basename(uri)} before each of {S3_TRIES} "
                       "tries to change it; retry when they are done")  # fmt: skip
