"""Tune's trial schedulers from the tune job: ASHA, FIFO, and population-based training with the checks
it needs (which keys may change while a trial trains) and perturbations kept inside the space."""

from __future__ import annotations

from functools import partial
from typing import Any

from mmray.config.tuning import AshaScheduler, PbtScheduler, TuneJob
from mmray.errors import ConfigError
from mmray.tune.space import Distribution

# A PBT trial continues another trial's checkpoint: these keys would have to change the weights, the
# data or the length of the schedule under it. Of the model's keys only settings read at run time
# (a fixed fusion weight, dropout) may change.
FIXED_UNDER_PBT_PREFIXES = ("model.", "data.")
RUNTIME_MODEL_SETTINGS = ("alpha", "dropout")
# Schedulers count a trial's progress in the epochs its Train run reports (not Tune's report count,
# which a trial resumed from its own run's later checkpoint would skew).
TIME_ATTR = "epoch"
FIXED_UNDER_PBT = frozenset(
    {
        "name",
        "storage_root",
        "init_from",
        "continue_from",
        "task.kind",
        "train.epochs",
        "train.batch_size",
        "train.grad_accum_steps",
        "train.num_workers",
        "train.cpus_per_worker",
        "train.use_gpu",
        "train.loader",
        "train.seed",
        "train.eval_every",
    }
)


def check_pbt(job: TuneJob, space: dict[str, Distribution], epochs: int) -> None:
    """Population-based training needs a population, perturbations before the last epoch, random
    search, and keys a trial can change while it trains."""
    config = job.tune.scheduler
    if not isinstance(config, PbtScheduler):
        return
    if job.tune.num_samples < 2:
        raise ConfigError("tune.num_samples: population-based training needs a population of at least 2 trials")
    if config.perturbation_interval >= epochs:
        raise ConfigError(
            f"tune.scheduler.perturbation_interval: {config.perturbation_interval} epochs is not less than the "
            f"trials' {epochs} epochs, so no trial would ever be perturbed"
        )
    if job.tune.search.kind != "random":
        raise ConfigError("tune.search.kind: population-based training explores by itself; use random")
    for key, distribution in space.items():
        if distribution.form == "grid":
            raise ConfigError(f"space.{key}: grid(...) cannot be perturbed; use choice(...) with pbt")
        if key.endswith(".kind"):
            raise ConfigError(
                f"space.{key}: a kind decides which parameters train and how, so a population-based trial "
                "cannot switch it while it continues another trial's optimizer state; search it with asha or fifo"
            )
        runtime = key.startswith("model.") and key.rsplit(".", 1)[-1] in RUNTIME_MODEL_SETTINGS
        if (key.startswith(FIXED_UNDER_PBT_PREFIXES) and not runtime) or key in FIXED_UNDER_PBT:
            raise ConfigError(
                f"space.{key}: a population-based trial continues another trial's weights and schedule, so "
                "this key cannot change while it trains; search it with scheduler asha or fifo"
            )


def keep_inside_space(config: dict[str, Any], space: dict[str, Distribution]) -> dict[str, Any]:
    """PBT's explore step multiplies continuous values; clip them back into their range (integers
    rounded), so every perturbed trial is still a valid job."""
    values = dict(config["values"])
    for key, distribution in space.items():
        if distribution.form in ("uniform", "loguniform", "randint") and key in values:
            low, high = distribution.args
            value = min(max(values[key], low), high)
            values[key] = round(value) if distribution.form == "randint" else float(value)
    return {**config, "values": values}


def _mutations(space: dict[str, Distribution]) -> dict[str, Any]:
    """Choices as lists (PBT moves to a neighbour), ranges as Tune domains (PBT scales or resamples)."""
    return {key: list(d.candidates()) if d.form in ("choice", "grid") else d.to_tune() for key, d in space.items()}


def build_scheduler(job: TuneJob, space: dict[str, Distribution], epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    config = job.tune.scheduler
    if isinstance(config, AshaScheduler):
        return ASHAScheduler(
            time_attr=TIME_ATTR,
            max_t=epochs,
            grace_period=min(config.grace_period, epochs),
            reduction_factor=config.reduction_factor,
        )
    if isinstance(config, PbtScheduler):
        return PopulationBasedTraining(
            time_attr=TIME_ATTR,
            perturbation_interval=config.perturbation_interval,
            hyperparam_mutations={"values": _mutations(space)},
            quantile_fraction=config.quantile_fraction,
            resample_probability=config.resample_probability,
            perturbation_factors=config.perturbation_factors,
            custom_explore_fn=partial(keep_inside_space, space=space),
            synch=config.synch,
        )
    return FIFOScheduler()  # type: ignore[no-untyped-call]
