"""A Ray Train fit stopped by Ctrl-C or SIGTERM ends before the stop goes on: its run aborted, its thread no
longer waiting in Ray, so the Ray shutdown that follows cannot crash the process under that thread."""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path

import pytest
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mmray.cluster.ray_compat import train_controller_waited_on
from mmray.train.trainer import abort_fit, in_background


def _wait_long() -> None:
    time.sleep(300)


def _interrupt_once_controlling(trainer_threads: list[threading.Thread]) -> None:
    """Ctrl-C in the main thread once the fit's Train controller runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if trainer_threads and train_controller_waited_on(trainer_threads[0]) is not None:
            time.sleep(1.0)  # its run under way
            _thread.interrupt_main()
            return
        time.sleep(0.2)


def test_a_stop_calls_on_stop_and_goes_on_once_the_work_has_ended() -> None:
    released, ended = threading.Event(), threading.Event()
    stopped: list[threading.Thread] = []

    def on_stop(thread: threading.Thread, finished: threading.Event) -> None:
        stopped.append(thread)
        released.set()
        finished.wait(5)

    threading.Timer(0.3, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        in_background(lambda: (released.wait(30), ended.set()), on_stop=on_stop)
    assert len(stopped) == 1 and ended.is_set()


@pytest.mark.slow
def test_an_interrupted_fit_is_aborted_and_its_thread_ended_before_the_stop_goes_on(
    ray_session: None, tmp_path: Path
) -> None:
    trainer = TorchTrainer(
        _wait_long,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="stopped", storage_path=str(tmp_path)),
    )
    threads: list[threading.Thread] = []
    ended = threading.Event()

    def fit() -> object:
        threads.append(threading.current_thread())
        try:
            return trainer.fit()
        finally:
            ended.set()

    watcher = threading.Thread(target=_interrupt_once_controlling, args=(threads,), daemon=True)
    watcher.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        in_background(fit, on_stop=abort_fit)
    assert ended.is_set(), "the fit still waits in Ray after the stop"
    assert time.monotonic() - started < 120
