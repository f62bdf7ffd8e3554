"""How a trial's Train run reports to Tune: rank 0's metrics and checkpoint pass from Ray Train's
controller through two one-slot Ray queues to the trial's driver, which reports them to Tune with a small checkpoint
that points at the Train checkpoint (Tune keeps the pointer; the weights stay where Train wrote them)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.exceptions import RayError
from ray.train.v2.api.callback import UserCallback

from mmray.errors import BundleError, json_object, reading
from mmray.train.checkpoint_score import CHECKPOINT_SCORE, is_measured

logger = logging.getLogger(__name__)
POINTER = "train_checkpoint.json"
DRIVER_GONE_WAIT_S = 300.0


@dataclass(frozen=True)
class ReportChannel:
    """Two one-slot Ray queues between a trial's Train controller and its driver: the reports, one at a time,
    and the acknowledgements that Tune took each."""

    reports: Any
    acknowledgements: Any


def open_channel() -> ReportChannel:
    from ray.util.queue import Queue

    return ReportChannel(*(Queue(maxsize=1, actor_options={"num_cpus": 0}) for _ in range(2)))


class ReportThroughChannel(UserCallback):  # type: ignore[misc]
    """Ray Train callback (runs in the Train controller): every report goes into the channel, then the
    controller waits for the driver's acknowledgement that Tune took it, so the run never registers a
    checkpoint ahead of the one Tune holds (Tune may pause or stop the trial at each report)."""

    def __init__(self, channel: ReportChannel) -> None:
        self.channel = channel

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        reported = dict(metrics[0])
        if CHECKPOINT_SCORE in reported and not is_measured(reported[CHECKPOINT_SCORE]):
            reported[CHECKPOINT_SCORE] = math.nan  # Ray's finite stand-in for an unmeasured score
        try:
            self.channel.reports.put({"metrics": reported, "checkpoint": checkpoint.path if checkpoint else None})
            self.channel.acknowledgements.get()
        except RayError:
            # The channel dies with the trial's driver when Tune pauses or stops the trial; this controller
            # is owned by the same process and is stopped with it. Wait for that instead of failing loudly.
            logger.info("the trial was paused or stopped by Tune; this Train run stops with it")
            time.sleep(DRIVER_GONE_WAIT_S)
            raise


@dataclass(frozen=True)
class TrainPointer:
    """Which Train checkpoint a Tune checkpoint stands for: the trial and Train run that wrote it."""

    trial_id: str
    run: str
    checkpoint: str
    epoch: int

    @classmethod
    def of(cls, tune_checkpoint: Any) -> TrainPointer | None:
        if tune_checkpoint is None:
            return None
        with tune_checkpoint.as_directory() as directory:
            path = Path(directory) / POINTER
            if not path.is_file():
                return None
            with reading(f"{tune_checkpoint.path}/{POINTER}", BundleError):
                return cls(**json_object(path.read_text()))


def report_to_tune(metrics: dict[str, Any], pointer: TrainPointer | None) -> None:
    """`tune.report` of one epoch, with a pointer checkpoint when Train checkpointed it."""
    from ray import tune

    if pointer is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="mmray-pointer-") as tmp:
        (Path(tmp) / POINTER).write_text(json.dumps(asdict(pointer)))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
