"""What a trial's driver reports to Tune when its Train run is ahead of the pointer Tune restored the trial
from (a search stopped while the run trained on): the epochs Tune never received, in order, from the run's
history, each with its own checkpoint while the run keeps it, the last once the run's outputs are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmray.train.driver import TrainOutcome
from mmray.tune import trial
from mmray.tune.reporting import TrainPointer
from mmray.tune.trial import Segment, TrialReporter

RUN = "trial-t_00000"


def _entry(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "recall_mean": epoch / 10, "step": 6 * epoch}


def _checkpoints(root: Path, epochs: int, pruned: tuple[int, ...] = ()) -> list[str]:
    """A run's checkpoints 1..epochs, each with its history; the `pruned` ones deleted as Train prunes."""
    uris = []
    for epoch in range(1, epochs + 1):
        directory = root / RUN / f"checkpoint_epoch_{epoch:04d}"
        uris.append(str(directory))
        if epoch in pruned:
            continue
        directory.mkdir(parents=True)
        (directory / "train_state.pt").write_bytes(b"")
        (directory / "history.json").write_text(json.dumps([_entry(e) for e in range(1, epoch + 1)]))
    return uris


def _outcome(root: Path, epochs: int) -> TrainOutcome:
    latest = str(root / RUN / f"checkpoint_epoch_{epochs:04d}")
    history = [_entry(e) for e in range(1, epochs + 1)]
    return TrainOutcome(str(root / RUN), latest, latest, "v", history[-1], history)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, TrainPointer | None]]:
    """(epoch, pointer) of every report the driver makes to Tune."""
    seen: list[tuple[int, TrainPointer | None]] = []
    monkeypatch.setattr(trial, "report_to_tune", lambda metrics, pointer: seen.append((metrics["epoch"], pointer)))
    return seen


def _reporter(root: Path, epochs: int, received: int) -> TrialReporter:
    return TrialReporter("t_00000", Segment(RUN, None), str(root), epochs, received)


def test_a_resumed_run_with_nothing_left_to_train_reports_its_last_epoch(
    tmp_path: Path, reports: list[tuple[int, TrainPointer | None]]
) -> None:
    uris = _checkpoints(tmp_path, 3)
    _reporter(tmp_path, 3, received=2).finish(_outcome(tmp_path, 3))
    assert reports == [(3, TrainPointer("t_00000", RUN, uris[2], 3))]


def test_epochs_tune_missed_are_reported_before_the_next_one_in_order(
    tmp_path: Path, reports: list[tuple[int, TrainPointer | None]]
) -> None:
    uris = _checkpoints(tmp_path, 5)
    reporter = _reporter(tmp_path, 5, received=2)
    reporter.epoch(_entry(4), uris[3])
    reporter.epoch(_entry(5), uris[4])
    assert [epoch for epoch, _ in reports] == [3, 4], "the last epoch waits for the run's outputs"
    reporter.finish(_outcome(tmp_path, 5))
    assert reports == [(e, TrainPointer("t_00000", RUN, uris[e - 1], e)) for e in (3, 4, 5)]


def test_a_missed_epoch_whose_checkpoint_was_pruned_is_reported_without_a_pointer(
    tmp_path: Path, reports: list[tuple[int, TrainPointer | None]]
) -> None:
    uris = _checkpoints(tmp_path, 3, pruned=(2,))
    _reporter(tmp_path, 3, received=1).finish(_outcome(tmp_path, 3))
    assert reports == [(2, None), (3, TrainPointer("t_00000", RUN, uris[2], 3))]


def test_a_run_tune_followed_throughout_reports_each_epoch_once(
    tmp_path: Path, reports: list[tuple[int, TrainPointer | None]]
) -> None:
    uris = _checkpoints(tmp_path, 3)
    reporter = _reporter(tmp_path, 3, received=0)
    for epoch in (1, 2, 3):
        reporter.epoch(_entry(epoch), uris[epoch - 1])
    reporter.finish(_outcome(tmp_path, 3))
    assert reports == [(e, TrainPointer("t_00000", RUN, uris[e - 1], e)) for e in (1, 2, 3)]


def test_the_train_callback_gives_tune_an_unmeasured_score_as_nan() -> None:
    """Ray Train is given an unmeasured epoch's score as a finite worst (its snapshot cannot hold NaN); Tune's
    results get NaN back, as the run's own history has it."""
    import math
    import queue
    import sys

    from mmray.tune.reporting import ReportChannel, ReportThroughChannel

    channel = ReportChannel(queue.Queue(1), queue.Queue(1))
    callback = ReportThroughChannel(channel)
    for score in (-sys.float_info.max, 0.5):
        channel.acknowledgements.put(True)
        callback.after_report(None, [{"epoch": 1, "checkpoint_score": score}], None)
        reported = channel.reports.get()["metrics"]["checkpoint_score"]
        assert math.isnan(reported) if score < 0 else reported == 0.5
