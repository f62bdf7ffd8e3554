"""One Tune trial: a driver that runs the trial's training job on Ray Train (or, with `runner: local`, in
its own process) and reports every evaluation to Tune with a pointer to its checkpoint, from which a
restored trial (after a failure, an interrupted search, or under population-based training) continues."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmray import storage
from mmray.cluster.connection import ray_log_level
from mmray.config.jobs import TrainJob, validate_job
from mmray.config.tuning import TrialResources, TuneJob
from mmray.train.loop import checkpoint_name
from mmray.train.state import TRAIN_STATE, checkpoint_history
from mmray.tune.reporting import ReportThroughChannel, TrainPointer, open_channel, report_to_tune
from mmray.tune.space import Distribution, trial_mapping

if TYPE_CHECKING:
    from mmray.train.driver import TrainOutcome

WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
TRIAL_WORKER_START_TIMEOUT_S = 1800
"""How long a trial's Train run waits for workers that sibling trials still release (under population-based
training a continued trial starts before the one it replaces ends); Ray Train's 60 s would fail with a
traceback. Requests no node can ever meet are refused before the search starts."""


def wait_for_sibling_trials_resources() -> None:
    """Let this process's Train runs (and their controllers) wait that long, unless the user set the timeout."""
    os.environ.setdefault(WORKER_START_TIMEOUT_ENV, str(TRIAL_WORKER_START_TIMEOUT_S))


@dataclass(frozen=True)
class TrialPlan:
    """What every trial shares: the base job, the fixed overrides, the trial resources and where the
    trials' Train runs live (`<storage_root>/<tune name>/trials/trial-<id>`)."""

    base: dict[str, Any]
    fixed: dict[str, Any]
    resources: TrialResources
    trials_root: str
    keep_every_checkpoint: bool = False


@dataclass(frozen=True)
class PreparedSearch:
    """A checked tune job: its trials' plan, the space, the objective and where it is stored."""

    job: TuneJob
    plan: TrialPlan
    space: dict[str, Distribution]
    metric: str
    mode: str
    epochs: int
    experiment_uri: str
    example: TrainJob

    @property
    def trial_count(self) -> int:
        grid = [len(d.candidates()) for d in self.space.values() if d.form == "grid"]
        return self.job.tune.num_samples * math.prod(grid)


def trial_job(plan: TrialPlan, values: dict[str, Any], name: str, continue_from: str | None = None) -> TrainJob:
    """A trial's training job: the base, the fixed overrides, the trial's values and resources; evaluated
    every epoch (the scheduler compares trials epoch by epoch)."""
    fixed = {
        **plan.fixed,
        "train.num_workers": plan.resources.num_workers,
        "train.cpus_per_worker": plan.resources.cpus_per_worker,
        "train.use_gpu": plan.resources.use_gpu,
        "train.eval_every": 1,
        "name": name,
        "storage_root": plan.trials_root,
    }
    if plan.keep_every_checkpoint:
        fixed["train.checkpoint.num_to_keep"] = None
    if continue_from:
        fixed["continue_from"] = continue_from
    spec = validate_job(trial_mapping(plan.base, fixed, values)[0], f"trial {name}")
    assert isinstance(spec, TrainJob)
    return spec


@dataclass(frozen=True)
class Segment:
    """The Train run a trial runs now: `trial-<id>` from scratch, the same run again (Train resumes it
    from its own latest checkpoint), or a new run continuing another trial's checkpoint."""

    run: str
    continue_from: str | None
    origin: str = ""  # "<trial>@<epoch>" of the checkpoint a continued run starts from


def next_segment(trial_id: str, restored: TrainPointer | None) -> Segment:
    if restored is None:
        return Segment(f"trial-{trial_id}", None)
    if restored.trial_id == trial_id:
        return Segment(restored.run, None)
    run = f"trial-{trial_id}-from-{restored.trial_id}-e{restored.epoch}"
    return Segment(run, restored.checkpoint, f"{restored.trial_id}@{restored.epoch}")


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """Tune's trainable over this trial's `config["values"]`: each epoch is reported as it arrives, the last
    once the run has written its outputs (Tune stops a trial at its last epoch)."""
    from ray import tune

    wait_for_sibling_trials_resources()
    # Tune logs every pointer checkpoint this driver reports ("Checkpoint successfully created at …").
    logging.getLogger("ray.train._internal.storage").setLevel(ray_log_level())
    trial_id = tune.get_context().get_trial_id()
    restored = TrainPointer.of(tune.get_checkpoint())
    segment = next_segment(trial_id, restored)
    job = trial_job(plan, dict(config["values"]), segment.run, segment.continue_from)
    reporter = TrialReporter(trial_id, segment, plan.trials_root, job.train.epochs, restored.epoch if restored else 0)
    if plan.resources.runner == "local":
        from mmray.train.local_run import run_local

        # One worker in this process, on the CPUs the trial holds; each epoch reaches Tune once checkpointed.
        threads = max(1, int(job.train.cpus_per_worker))
        outcome = run_local(job, rerun="resume", on_report=reporter.epoch, threads=threads)
    else:
        outcome = _train_on_ray_train(job, reporter)
    reporter.finish(outcome)


@dataclass
class TrialReporter:
    """Passes a trial's epochs to Tune with a pointer to each Train checkpoint, the last held until `finish`;
    epochs of the run's history that Tune never got (after `received`) are reported before the next."""

    trial_id: str
    segment: Segment
    trials_root: str
    epochs: int
    received: int = 0
    """The last epoch Tune received from this trial."""
    last: tuple[dict[str, Any], str | None] | None = None

    def epoch(self, metrics: dict[str, Any], checkpoint: str | None) -> None:
        number = _epoch_of(metrics)
        if checkpoint and number > self.received + 1:
            self._catch_up(checkpoint_history(self._uri(checkpoint)), number)
        if number >= self.epochs:
            self.last = (metrics, checkpoint)
        else:
            self._to_tune(metrics, checkpoint)

    def finish(self, outcome: TrainOutcome) -> None:
        """The held last epoch (for a resumed run that trained none, its history's last one Tune lacks)."""
        history = outcome.history
        if self.last is None and history and _epoch_of(history[-1]) > self.received:
            self.last = (history[-1], outcome.latest_bundle)
        if self.last is not None:
            self._catch_up(history, _epoch_of(self.last[0]))
            self._to_tune(*self.last)

    def _catch_up(self, history: Sequence[dict[str, Any]], before: int) -> None:
        """Report the history's epochs after `received` and before `before`, with checkpoints still kept."""
        run_uri = storage.join(self.trials_root, self.segment.run)
        for entry in history:
            if self.received < _epoch_of(entry) < before:
                checkpoint = storage.join(run_uri, checkpoint_name(_epoch_of(entry)))
                kept = storage.exists(storage.join(checkpoint, TRAIN_STATE))
                self._to_tune(entry, checkpoint if kept else None)

    def _uri(self, checkpoint: str) -> str:
        return storage.absolute_uri(storage.uri_under(checkpoint, self.trials_root))

    def _to_tune(self, metrics: dict[str, Any], checkpoint: str | None) -> None:
        epoch = _epoch_of(metrics)
        metrics = {**metrics, "train_run": self.segment.run, "continued_from": self.segment.origin}
        pointer = TrainPointer(self.trial_id, self.segment.run, self._uri(checkpoint), epoch) if checkpoint else None
        report_to_tune(metrics, pointer)
        self.received = max(self.received, epoch)


def _epoch_of(metrics: dict[str, Any]) -> int:
    return int(metrics.get("epoch", 0))


def _train_on_ray_train(job: TrainJob, reporter: TrialReporter) -> TrainOutcome:
    """The Train run in a thread; its controller's reports arrive through the channel's queues, and each is
    acknowledged once Tune took it."""
    from ray.exceptions import RayError

    from mmray.train.trainer import run_training

    channel = open_channel()
    outcome: list[TrainOutcome] = []
    failure: list[BaseException] = []

    def train() -> None:
        try:
            outcome.append(run_training(job, callbacks=[ReportThroughChannel(channel)], rerun="resume"))
        except BaseException as exc:
            failure.append(exc)
        finally:
            with contextlib.suppress(RayError):  # the channel is gone when Tune stopped this trial
                channel.reports.put(None)

    thread = threading.Thread(target=train, name=f"train-{reporter.segment.run}", daemon=True)
    thread.start()
    while (item := channel.reports.get()) is not None:
        reporter.epoch(item["metrics"], item["checkpoint"])
        channel.acknowledgements.put(True)
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
