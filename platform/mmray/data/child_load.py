"""Loading a large split in a child process: the JSON parse (several times the size of the files)
peaks there, and only the records come back, so a driver's memory grows by the records alone."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mmray import storage
from mmray.errors import DataError, MmrayError

T = TypeVar("T")

CHILD_LOAD_BYTES = 32 * 2**20
"""Annotation files of at least this many bytes together are parsed in a child process (COCO train2017's
captions and instances are about 540 MB); smaller ones in the caller, where a process start would cost more
than the parse."""


def annotation_bytes(uris: list[str]) -> int:
    """The files' size together; a file that cannot be read counts 0 (loading it reports why)."""
    total = 0
    for uri in uris:
        try:
            total += storage.s3_object_info(uri)["size"] if storage.is_s3(uri) else Path(uri).stat().st_size
        except (OSError, MmrayError):
            continue
    return total


class _Collect(logging.Handler):
    """Keeps the child's log records, made picklable, to be handled again by the caller's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        self.records.append(record)


def _child(request_path: str, outcome_path: str) -> None:
    """The child's side: the request (what to call, the log level) read, the outcome and log records
    written. Ctrl-C is the caller's to handle: it kills the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(request_path, "rb") as file:
        load, level = pickle.load(file)
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    root.setLevel(level)
    try:
        outcome: tuple[str, Any] = ("loaded", load())
    except (MmrayError, OSError, ValueError) as exc:
        outcome = ("refused", exc)
    with open(outcome_path, "wb") as file:
        pickle.dump((outcome, collect.records), file, protocol=pickle.HIGHEST_PROTOCOL)


def load_in_child(load: Callable[[], T], what: str) -> T:
    """`load()` (picklable: a module's function, or a partial of one) run in a child Python; its result
    returned, its error raised, its log lines logged here. The child is stopped if the caller is interrupted;
    a child that dies (killed, out of memory) is a `DataError` naming `what`."""
    with tempfile.TemporaryDirectory(prefix="mmray-load-") as scratch:
        request_path, outcome_path = os.path.join(scratch, "request.pickle"), os.path.join(scratch, "outcome.pickle")
        with open(request_path, "wb") as file:
            pickle.dump((load, logging.getLogger("mmray").getEffectiveLevel()), file)
        child = subprocess.Popen([sys.executable, "-m", __name__, request_path, outcome_path])
        try:
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != 0 or not os.path.exists(outcome_path):
            raise DataError(f"{what}: the process loading it stopped (exit code {child.returncode}; out of memory?)")
        with open(outcome_path, "rb") as file:  # read frame by frame: no second copy of the records' bytes
            (kind, value), records = pickle.load(file)
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    if kind == "refused":
        raise value
    loaded: T = value
    return loaded


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
