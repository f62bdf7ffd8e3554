"""One Tune trial: a small driver that builds the trial's training job and runs it on Ray Train,
reporting every evaluation to Tune through Ray Train's `TuneReportCallback`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmray.config.jobs import TrainJob, validate_job
from mmray.config.tuning import TrialResources
from mmray.tune.space import trial_mapping


@dataclass(frozen=True)
class TrialPlan:
    """What every trial shares: the base job, the fixed overrides, the trial resources and where the
    trials' Train runs live (`<storage_root>/<tune name>/trials/trial-<id>`)."""

    base: dict[str, Any]
    fixed: dict[str, Any]
    resources: TrialResources
    trials_root: str


def trial_job(plan: TrialPlan, values: dict[str, Any], name: str) -> TrainJob:
    """The training job of a trial: the base, the fixed overrides, the trial's values, its resources;
    evaluated every epoch (the scheduler compares trials epoch by epoch)."""
    resources = plan.resources
    fixed = {
        **plan.fixed,
        "train.num_workers": resources.num_workers,
        "train.cpus_per_worker": resources.cpus_per_worker,
        "train.use_gpu": resources.use_gpu,
        "train.eval_every": 1,
        "name": name,
        "storage_root": plan.trials_root,
    }
    mapping, _ = trial_mapping(plan.base, fixed, values)
    spec = validate_job(mapping, f"trial {name}")
    assert isinstance(spec, TrainJob)
    return spec


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """Tune's trainable: `config["values"]` holds this trial's sample of the space."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mmray.train.trainer import run_training

    name = f"trial-{tune.get_context().get_trial_id()}"
    report = TuneReportCallback()  # type: ignore[no-untyped-call]
    run_training(trial_job(plan, dict(config["values"]), name), callbacks=[report])
