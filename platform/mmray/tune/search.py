"""Running a tune job: the Tuner (ASHA or FIFO; random, grid or Optuna search), progress lines,
resume of an interrupted search, and the results (table, CSV, PNGs, the best trial as a train job)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, cast

from ray.tune import Callback

from mmray import storage
from mmray.cluster.connection import check_local_gpus, check_worker_resources, connect, warn_if_other_local_ray
from mmray.config.jobs import TrainJob
from mmray.config.tuning import PbtScheduler, TuneJob
from mmray.data.processor import Processor
from mmray.data.sources import resolve_splits
from mmray.errors import ConfigError, TrainingError
from mmray.tasks.registry import task_class
from mmray.tune.results import SearchOutcome, summarise
from mmray.tune.schedulers import TIME_ATTR, build_scheduler, check_pbt
from mmray.tune.space import base_mapping, check_space, parse_space
from mmray.tune.stopping import graceful_stops, raise_if_stopped
from mmray.tune.trial import PreparedSearch, TrialPlan, run_trial, trial_job

logger = logging.getLogger(__name__)


def objective(job: TuneJob, example: TrainJob) -> tuple[str, str]:
    """The metric and mode: the tune job's, else the checkpoint score the training job ranks by."""
    checkpoint = example.train.checkpoint
    # A task's score depends on its config alone; no processor is needed to read it.
    score = task_class(example.task.kind)(example.task, example.model, cast(Processor, None)).score
    metric = job.tune.metric or checkpoint.score_attribute or score.metric
    default_mode = score.mode if metric == score.metric else (checkpoint.score_order or "max")
    return metric, job.tune.mode or default_mode


def prepare_search(job: TuneJob, base_directory: Path | None = None) -> PreparedSearch:
    """Parse and check the space against the base job's schema before anything runs."""
    base = base_mapping(job, base_directory)
    space = parse_space(job.space)
    check_space(base, job.overrides, space)
    if job.tune.search.kind == "optuna" and any(d.form == "grid" for d in space.values()):
        raise ConfigError("space: grid(...) needs tune.search.kind=random; Optuna samples, use choice(...)")
    root = job.storage_root if storage.is_s3(job.storage_root) else os.path.abspath(job.storage_root)
    experiment_uri = storage.join(root, job.name)
    keep_every_checkpoint = isinstance(job.tune.scheduler, PbtScheduler)
    trials_root = storage.join(experiment_uri, "trials")
    plan = TrialPlan(base, dict(job.overrides), job.tune.trial, trials_root, keep_every_checkpoint)
    example = trial_job(plan, {key: d.candidates()[0] for key, d in space.items()}, "trial-check")
    check_pbt(job, space, example.train.epochs)
    metric, mode = objective(job, example)
    return PreparedSearch(job, plan, space, metric, mode, example.train.epochs, experiment_uri, example)


class ProgressLines(Callback):  # type: ignore[misc]
    """One line per reported epoch and per finished trial, with the best objective so far."""

    def __init__(self, metric: str, mode: str, total: int) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.best: float | None = None

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = float(value) if better else self.best
        running = sum(1 for t in trials if t.status == "RUNNING")
        epoch = result.get(TIME_ATTR)
        logger.info("trial %s epoch %s: %s %s | %d running, best so far %s", trial.trial_id, epoch, self.metric,
                    _shown(value), running, _shown(self.best))  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        done = 1 + sum(1 for t in trials if t is not trial and t.status in ("TERMINATED", "ERROR"))
        logger.info("trial %s finished (%d of %d trials done)", trial.trial_id, done, self.total)


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _tuner(prepared: PreparedSearch, resume: bool) -> Any:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    job, settings = prepared.job, prepared.job.tune
    trainable = tune.with_resources(partial(run_trial, plan=prepared.plan), settings.trial.driver_resources())
    filesystem, storage_path = storage.pyarrow_filesystem(prepared.experiment_uri.rsplit("/", 1)[0])
    experiment_path = storage.join(storage_path, job.name)
    if resume:
        if not tune.Tuner.can_restore(experiment_path, storage_filesystem=filesystem):
            raise ConfigError(f"--resume: no search to resume at {prepared.experiment_uri}")
        return tune.Tuner.restore(
            experiment_path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem
        )
    seed = settings.search.seed
    limit: int | None = settings.max_concurrent_trials
    if settings.search.kind == "optuna":
        search: Any = OptunaSearch(seed=seed)
    else:
        search, limit = BasicVariantGenerator(random_state=seed, max_concurrent=settings.max_concurrent_trials), None
    return tune.Tuner(
        trainable,
        param_space={"values": {key: d.to_tune() for key, d in prepared.space.items()}},
        tune_config=tune.TuneConfig(
            metric=prepared.metric,
            mode=prepared.mode,
            num_samples=settings.num_samples,
            max_concurrent_trials=limit,
            scheduler=build_scheduler(job, prepared.space, prepared.epochs),
            search_alg=search,
        ),
        run_config=tune.RunConfig(
            name=job.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[ProgressLines(prepared.metric, prepared.mode, prepared.trial_count)],
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # A trial at its last epoch is done: stopped before a scheduler could perturb or pause it.
            stop={TIME_ATTR: prepared.epochs},
            verbose=0,
        ),
    )


def run_tune(job: TuneJob, resume: bool | None = False, base_directory: Path | None = None) -> SearchOutcome:
    """Check the job, run the search (`resume`: continue its saved state; None: continue it if one is saved),
    and write its results under the experiment."""
    prepared = prepare_search(job, base_directory)
    # Trials keep the driver's working directory (relative paths in the base job mean the same there).
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    saved = storage.exists(storage.join(prepared.experiment_uri, "tuner.pkl"))
    resume = saved if resume is None else resume
    if not resume and saved:
        raise ConfigError(
            f"a search named {prepared.job.name!r} exists at {prepared.experiment_uri}; "
            "`mmray tune JOB --resume` continues it, or choose another name"
        )
    check_local_gpus(job.tune.trial.num_workers, job.tune.trial.use_gpu, f"each trial of {job.name}")
    resolve_splits(prepared.example.data)  # generated data is made once here, not by every trial
    connect()
    warn_if_other_local_ray(f"search {job.name}")
    trial = job.tune.trial
    check_worker_resources(trial.num_workers, trial.cpus_per_worker, trial.use_gpu, f"each trial of {job.name}")
    if storage.is_s3(job.storage_root):
        storage.ensure_bucket(job.storage_root)
    logger.info("searching %d keys for the %s of %s (%s); trials under %s", len(prepared.space), prepared.mode,
                prepared.metric, job.tune.scheduler.kind, prepared.plan.trials_root)  # fmt: skip
    tuner = _tuner(prepared, resume)
    with contextlib.redirect_stdout(sys.stderr):  # stdout keeps the results; Ray's lines arrive until it stops
        with graceful_stops() as stops:
            grid = tuner.fit()
        raise_if_stopped(stops, job.name)
        if len(grid) == 0:
            raise TrainingError(f"search {job.name} ran no trials")
        return summarise(prepared, grid)
