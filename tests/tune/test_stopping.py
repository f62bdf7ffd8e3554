"""How a search ends on Ctrl-C or SIGTERM: through Tune's own SIGINT handler, recorded from Tune's stop
message (which mmray replaces with its own resume command)."""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

import pytest

from mmray.errors import Terminated
from mmray.tune.stopping import TUNE_LOGGER, graceful_stops, raise_if_stopped

TUNES_STOP = "Experiment has been interrupted, but the most recent state was saved."


def test_a_search_that_ran_to_its_end_is_not_stopped() -> None:
    with graceful_stops() as stops:
        logging.getLogger(TUNE_LOGGER).warning("Total run time: 12.00 seconds")
    raise_if_stopped(stops, "search")


def test_tunes_stop_message_is_recorded_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with graceful_stops() as stops:
        logging.getLogger(TUNE_LOGGER).warning(TUNES_STOP)
    assert stops.interrupted and not stops.terminated
    assert "Experiment has been interrupted" not in caplog.text
    with pytest.raises(KeyboardInterrupt, match="search s stopped, its state saved") as raised:
        raise_if_stopped(stops, "s")
    assert not isinstance(raised.value, Terminated)


def test_sigterm_calls_tunes_sigint_handler_and_is_recorded() -> None:
    called: list[int] = []

    def tunes_handler(signum: int, frame: FrameType | None) -> None:
        called.append(signum)

    previous = signal.getsignal(signal.SIGINT)
    try:
        with graceful_stops() as stops:
            signal.signal(signal.SIGINT, tunes_handler)  # as Tune's fit() installs it
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            logging.getLogger(TUNE_LOGGER).warning(
                "Experiment has been interrupted, but the most recent state was saved."
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert called == [signal.SIGINT] and stops.terminated
    with pytest.raises(Terminated):
        raise_if_stopped(stops, "s")


def test_the_signal_handlers_tune_leaves_installed_are_restored_after_the_search() -> None:
    """Tune's fit() installs SIGINT and SIGUSR1 handlers that only end a search and keeps them after it; what
    runs next in the process (a pipeline's training stage) must get Ctrl-C again."""
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)}
    try:
        with graceful_stops():
            for number in (signal.SIGINT, signal.SIGUSR1):
                signal.signal(number, lambda signum, frame: None)  # as Tune's fit() installs them
        assert {number: signal.getsignal(number) for number in before} == before
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
