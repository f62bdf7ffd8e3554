"""Stopping a search: Ctrl-C and SIGTERM both end it through Tune's own graceful stop, which saves the
search's state for `mmray tune JOB --resume`; the search then says it was stopped instead of
summarising its unfinished trials as results."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mmray.errors import Terminated

TUNE_LOGGER = "ray.tune.tune"
TUNE_STOP_MESSAGE = "Experiment has been interrupted"


class SearchStops(logging.Filter):
    """How a search ended early: `interrupted` when Tune logged its graceful stop (its 'Resume experiment
    with: Tuner.restore(...)' hint, dropped here: mmray names its own resume command), `terminated`
    when that stop came from SIGTERM."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False
        self.terminated = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(TUNE_STOP_MESSAGE):
            self.interrupted = True
            return False
        return True


@contextlib.contextmanager
def graceful_stops() -> Iterator[SearchStops]:
    """While Tune runs in this (main) thread, SIGTERM calls Tune's own SIGINT handler (a graceful stop;
    a second signal stops at once), and a graceful stop by either is recorded. The handlers Tune installs
    and keeps after its search (SIGINT, SIGUSR1) are replaced by those before it, so whatever runs next in
    the process stops on Ctrl-C."""
    stops = SearchStops()
    tune_logger = logging.getLogger(TUNE_LOGGER)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stops.terminated = True
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise Terminated
        handler(signal.SIGINT, frame)

    in_main = threading.current_thread() is threading.main_thread()
    kept: dict[signal.Signals, Any] = {}
    if in_main:
        kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGUSR1)}
        kept[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_sigterm)
    tune_logger.addFilter(stops)
    try:
        yield stops
    finally:
        tune_logger.removeFilter(stops)
        for number, handler in kept.items():
            if handler is not None:  # None: not installed from Python, so not Tune's either
                signal.signal(number, handler)


def raise_if_stopped(stops: SearchStops, name: str) -> None:
    """After a graceful stop, raise `Terminated` (SIGTERM) or KeyboardInterrupt naming the search."""
    if stops.interrupted:
        message = f"search {name} stopped, its state saved"
        raise Terminated(message) if stops.terminated else KeyboardInterrupt(message)
