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
