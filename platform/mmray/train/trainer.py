"""Training on Ray Train: the TorchTrainer of a train job, started and finished by the driver."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mmray import storage
from mmray.cluster.connection import check_local_gpus, check_worker_resources, cluster_cpus, connect, ray_log_level
from mmray.cluster.ray_compat import train_controller_waited_on
from mmray.config import TrainJob
from mmray.errors import BundleError, ConfigError, TrainingError
from mmray.tasks.base import Score
from mmray.train.checkpoint_score import CHECKPOINT_SCORE
from mmray.train.driver import TrainOutcome, loop_config, prepare_driver_data, write_outputs
from mmray.train.live import ProgressBoard
from mmray.train.pointer_callback import PointAtKept
from mmray.train.ray_context import LOOP_CONFIG, train_loop_per_worker
from mmray.train.ray_data_feed import training_dataset
from mmray.train.run_record import Rerun, check_run_directory, record_job

logger = logging.getLogger(__name__)
T = TypeVar("T")
ABORT_TIMEOUT_S = 60.0
"""How long a stopped run may take to abort before Ray is shut down under it."""


def decode_pool(spec: TrainJob) -> tuple[int, float]:
    """The most Ray Data decoding actors and the CPUs each reserves: none where the workers take every CPU (the
    decoding then shares their cores rather than waiting forever for a free one)."""
    settings = spec.train
    spare = cluster_cpus() - settings.num_workers * settings.cpus_per_worker
    actors = settings.decode_actors or max(1, int(spare))
    if spare >= 1:
        return actors, 1.0
    logger.warning(
        "the training workers take every CPU of the cluster (%g); Ray Data decodes on the same cores", cluster_cpus()
    )
    return actors, 0.0


@dataclass
class PreparedRun:
    """A train job's TorchTrainer, the score that ranks its checkpoints, and the spec bound to its data."""

    trainer: TorchTrainer
    score: Score
    spec: TrainJob
    board: Any = None  # where rank 0 posts progress for the driver's bar, when one is drawn


def build_trainer(spec: TrainJob, callbacks: Sequence[Any] = (), live: bool = False) -> PreparedRun:
    """The TorchTrainer of a train job, with extra Ray Train callbacks (e.g. Tune's report callback).
    Data, files and weights are checked before Ray starts; resources right after."""
    settings, what = spec.train, f"training run {spec.name}"
    check_local_gpus(settings.num_workers, settings.use_gpu, what)
    data = prepare_driver_data(spec)
    connect()
    check_worker_resources(settings.num_workers, settings.cpus_per_worker, settings.use_gpu, what)
    filesystem, storage_path = storage.pyarrow_filesystem(spec.storage_root)
    board = ray.remote(num_cpus=0)(ProgressBoard).remote() if live else None
    config = {**loop_config(data, ray.put), "ray_log_level": ray_log_level(), "progress_board": board}
    run_callbacks: list[Any] = [PointAtKept(config["run_dir"], data.score.mode), *callbacks]
    datasets = None
    if data.train_records is not None:
        actors, cpus = decode_pool(data.spec)
        logger.info(
            "streaming %d training images, decoded by up to %d Ray Data actors", data.num_train_examples, actors
        )
        seed, most = data.spec.train.seed, data.max_captions
        datasets = {"train": training_dataset(data.train_records, data.processor, seed, most, actors, cpus)}
    trainer = TorchTrainer(
        train_loop_per_worker,  # type: ignore[arg-type]  # its return value is Result.return_value (Ray 2.60)
        train_loop_config={LOOP_CONFIG: ray.put(config)},
        scaling_config=ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
            placement_strategy=settings.placement_strategy,
        ),
        run_config=RunConfig(
            name=spec.name,
            logging_config=LoggingConfig(log_level=ray_log_level()),  # type: ignore[call-arg]  # Train V2's
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=settings.checkpoint.num_to_keep,
                checkpoint_score_attribute=CHECKPOINT_SCORE,
                checkpoint_score_order=data.score.mode,
            ),
            failure_config=FailureConfig(max_failures=settings.max_failures),
            callbacks=run_callbacks,
        ),
        datasets=datasets,
        dataset_config=DataConfig(execution_options=ordered_ingest()) if datasets else None,
    )
    return PreparedRun(trainer, data.score, data.spec, board)


def ordered_ingest() -> Any:
    """Ray Train's ingest options with order preserved, so a seeded stream repeats for a (seed, epoch)."""
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def start_run(spec: TrainJob, callbacks: Sequence[Any] = (), rerun: Rerun = "check", live: bool = False) -> PreparedRun:
    """Everything before `fit`; the job is recorded in the run directory only once all its checks passed."""
    check_run_directory(spec, rerun)
    prepared = build_trainer(spec, callbacks, live=live)
    record_job(spec)
    return prepared


def fit(prepared: PreparedRun) -> Any:
    """`trainer.fit()`; a run that failed past its retries is a `TrainingError` naming the run and the first
    rank's error in one line (every rank's traceback is in Ray's output above it and in its logs)."""
    try:
        return prepared.trainer.fit()
    except ray.train.TrainingFailedError as exc:
        failures = getattr(exc, "worker_failures", None) or {0: getattr(exc, "controller_failure", exc)}
        first = failures[min(failures)]
        last_line = ([line for line in str(first).splitlines() if line.strip()] or [""])[-1]
        raise TrainingError(f"training run {prepared.spec.name} failed: {type(first).__name__}: {last_line}") from exc


def finish_run(prepared: PreparedRun, result: Any) -> TrainOutcome:
    stopped = result.return_value  # see train_loop_per_worker
    if stopped is not None:
        error = {"ConfigError": ConfigError, "BundleError": BundleError}.get(stopped["error"], TrainingError)
        raise error(f"training run {prepared.spec.name}: {stopped['message']}")
    root = prepared.spec.storage_root
    latest = storage.uri_under(result.checkpoint.path, root) if result.checkpoint is not None else None
    candidates = [
        (storage.uri_under(checkpoint.path, root), metrics.get(CHECKPOINT_SCORE))
        for checkpoint, metrics in result.best_checkpoints or []
    ]
    return write_outputs(prepared.spec, latest, candidates, prepared.score.mode)


def run_training(spec: TrainJob, callbacks: Sequence[Any] = (), rerun: Rerun = "check") -> TrainOutcome:
    """Train `spec` on Ray Train; re-running the same name under the same root resumes the run."""
    prepared = start_run(spec, callbacks, rerun)
    return finish_run(prepared, fit_in_background(prepared))


def fit_in_background(prepared: PreparedRun, while_waiting: Callable[[threading.Thread], None] | None = None) -> Any:
    """`fit(prepared)` in a background thread (see `in_background`); stopped, its run is aborted first."""
    return in_background(lambda: fit(prepared), while_waiting, abort_fit)


def abort_fit(thread: threading.Thread, finished: threading.Event, timeout_s: float = ABORT_TIMEOUT_S) -> None:
    """Abort the Ray Train run `thread` fits (its controller ends the workers, then itself) and wait until the
    work is `finished`: Ray shut down under a thread still waiting in it can crash the process (SIGSEGV)."""
    deadline = time.monotonic() + timeout_s
    aborted = False
    while not finished.is_set() and time.monotonic() < deadline:
        controller = None if aborted else train_controller_waited_on(thread)
        if controller is not None:
            logger.info("aborting the training run: its workers stop")
            with contextlib.suppress(ray.exceptions.RayError):  # the controller exits as it aborts
                ray.get(controller.abort.remote(), timeout=max(deadline - time.monotonic(), 1.0))
            aborted = True
        finished.wait(0.2)
    if not finished.is_set():
        logger.warning("the training run did not stop within %g s; shutting Ray down under it", timeout_s)


def in_background(
    work: Callable[[], T],
    while_waiting: Callable[[threading.Thread], None] | None = None,
    on_stop: Callable[[threading.Thread, threading.Event], None] | None = None,
) -> T:
    """Run `work` in a thread while this (main) thread waits (or runs `while_waiting`, e.g. drawing
    progress), so Ctrl-C reaches mmray as a KeyboardInterrupt (Ray Train installs its own SIGINT
    handler only in the main thread, and exits). Stopped (Ctrl-C, `Terminated`), `on_stop(thread, finished)`
    ends the work before the stop goes on; `finished` is set once it has (a `join` that a stop interrupted
    can leave `thread.is_alive()` False while it runs on)."""
    outcome: Future[T] = Future()
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.set_result(work())
        except BaseException as exc:
            outcome.set_exception(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=run, name="mmray-work", daemon=True)
    thread.start()
    try:
        if while_waiting is not None:
            while_waiting(thread)
        while not finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        if on_stop is not None:
            on_stop(thread, finished)
        raise
    return outcome.result()
