"""Tune jobs and search spaces: parsing, every validation error, conditional keys, trial jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray.config import ConfigError, TrainJob, TuneJob, load_job
from mmray.tune.reporting import TrainPointer
from mmray.tune.schedulers import keep_inside_space
from mmray.tune.search import objective, prepare_search
from mmray.tune.space import check_space, parse_distribution, parse_space, trial_mapping
from mmray.tune.trial import Segment, TrialPlan, next_segment, trial_job

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "jobs" / "shapes-clip.yaml").read_text())
TRIPLET = {**BASE, "task": {**BASE["task"], "loss": {"kind": "triplet"}}}


def _job(space: dict[str, str], **extra: Any) -> TuneJob:
    return TuneJob.model_validate({"kind": "tune", "name": "t", "base": BASE, "space": space, **extra})


@pytest.mark.parametrize(
    ("text", "form", "args"),
    [
        ("uniform(0.05, 1.0)", "uniform", (0.05, 1.0)),
        ("loguniform(1e-4, 3e-3)", "loguniform", (1e-4, 3e-3)),
        ("randint(1, 4)", "randint", (1, 4)),
        ("choice([infonce, triplet])", "choice", (("infonce", "triplet"),)),
        ("grid([64, 128])", "grid", ((64, 128),)),
    ],
)
def test_each_form_parses(text: str, form: str, args: tuple) -> None:
    parsed = parse_distribution("k", text)
    assert (parsed.form, parsed.args) == (form, args)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normal(0, 1)", "is not one of uniform"),
        ("uniform(1)", "takes two numbers"),
        ("uniform(a, b)", "takes two numbers"),
        ("uniform(2, 1)", "needs low < high"),
        ("loguniform(0, 1)", "positive bounds"),
        ("uniform(0.001, inf)", "finite bounds"),
        ("loguniform(1e-4, 1e400)", "finite bounds"),
        ("uniform(.nan, 1)", "finite bounds"),
        ("randint(1.5, 3)", "randint takes integers"),
        ("choice([])", "one non-empty list"),
        ("choice(a, b)", "one non-empty list"),
        ("0.001", "is not one of"),
    ],
)
def test_malformed_distributions_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"space.train.lr: .*{message}"):
        parse_distribution("train.lr", text)


def test_keys_and_values_are_checked_against_the_training_schema() -> None:
    def check(space: dict[str, str], fixed: dict[str, Any] | None = None) -> None:
        check_space(BASE, fixed or {}, parse_space(space))

    check({"train.lr": "loguniform(1e-4, 3e-3)", "model.init_temperature": "loguniform(0.02, 0.2)"})
    with pytest.raises(ConfigError, match=r"space.train.lrr: .*unknown key 'lrr' \(did you mean 'lr'\?\)"):
        check({"train.lrr": "uniform(0.1, 0.2)"})
    with pytest.raises(ConfigError, match=r"space.train.lr: value -1 is rejected: .*greater than 0"):
        check({"train.lr": "uniform(-1, 0.2)"})
    with pytest.raises(ConfigError, match=r"space.train.batch_size: value 255 is rejected: .*divisible"):
        check({"train.batch_size": "choice([256, 255])"})
    with pytest.raises(ConfigError, match=r"space.task.loss.kind: value 'trplet' is rejected"):
        check({"task.loss.kind": "choice([infonce, trplet])"})
    with pytest.raises(ConfigError, match=r"space.task.loss.margin: .*unknown key 'margin'"):
        check({"task.loss.margin": "uniform(0.1, 0.5)"})
    with pytest.raises(ConfigError, match=r"space.task.loss.margin: no searched kind takes this key"):
        check({"task.loss.kind": "choice([infonce])", "task.loss.margin": "uniform(0.1, 0.5)"})
    with pytest.raises(ConfigError, match=r"overrides is not valid: .*epochs"):
        check({"train.lr": "uniform(0.001, 0.002)"}, {"train.epochs": 0})


def test_a_key_of_a_searched_kind_applies_only_to_trials_of_a_kind_that_takes_it() -> None:
    values = {"task.loss.kind": "infonce", "task.loss.margin": 0.3}
    mapping, inactive = trial_mapping(BASE, {}, values)
    assert inactive == ["task.loss.margin"] and mapping["task"]["loss"] == {"kind": "infonce"}
    mapping, inactive = trial_mapping(BASE, {}, {**values, "task.loss.kind": "triplet"})
    assert inactive == [] and mapping["task"]["loss"] == {"kind": "triplet", "margin": 0.3}


def test_a_fusion_kind_and_its_weight_can_be_searched_together() -> None:
    base = yaml.safe_load((REPO / "jobs" / "shapes-classify.yaml").read_text())
    space = parse_space({"model.fusion.kind": "choice([weighted_sum, gated])", "model.fusion.alpha": "uniform(0, 1)"})
    check_space(base, {}, space)
    mapping, inactive = trial_mapping(base, {}, {"model.fusion.kind": "weighted_sum", "model.fusion.alpha": 0.3})
    assert mapping["model"]["fusion"] == {"kind": "weighted_sum", "alpha": 0.3} and not inactive
    assert trial_mapping(base, {}, {"model.fusion.kind": "gated", "model.fusion.alpha": 0.3})[1] == [
        "model.fusion.alpha"
    ]


def test_the_tune_job_itself_is_checked() -> None:
    with pytest.raises(ValueError, match="name at least one key"):
        _job({})
    with pytest.raises(ValueError, match=r"space and overrides both set train\.lr"):
        _job({"train.lr": "uniform(0.001, 0.002)"}, overrides={"train.lr": 0.001})
    with pytest.raises(ConfigError, match="searches a 'train' job"):
        prepare_search(_job({"train.lr": "uniform(0.001, 0.002)"}, base={**BASE, "kind": "index"}))
    optuna_grid = _job({"train.batch_size": "grid([64, 128])"}, tune={"search": {"kind": "optuna"}})
    with pytest.raises(ConfigError, match=r"grid.*needs tune.search.kind=random"):
        prepare_search(optuna_grid)
    for seed in (-1, 2**32):  # the samplers take 0..2**32 - 1; Ray refused it only once started
        with pytest.raises(ValueError, match=r"tune\.search\.seed"):
            _job({"train.lr": "uniform(0.001, 0.002)"}, tune={"search": {"seed": seed}})
    with pytest.raises(ConfigError, match=r"tune.scheduler"):
        load_job(REPO / "jobs" / "shapes-tune.yaml", ["tune.scheduler.kind=hyperband"])


def test_trials_get_their_resources_and_the_objective_defaults_to_the_tasks_score(tmp_path: Path) -> None:
    job = load_job(REPO / "jobs" / "shapes-tune.yaml")
    assert isinstance(job, TuneJob)
    prepared = prepare_search(job)
    assert (prepared.metric, prepared.mode, prepared.epochs) == ("recall_mean", "max", 4)
    plan = TrialPlan(prepared.plan.base, prepared.plan.fixed, prepared.plan.resources, str(tmp_path / "trials"))
    spec = trial_job(plan, {"train.lr": 0.001, "task.loss.kind": "triplet", "task.loss.margin": 0.2}, "trial-x")
    assert isinstance(spec, TrainJob)
    assert (spec.train.num_workers, spec.train.cpus_per_worker, spec.train.eval_every) == (1, 1.0, 1)
    assert spec.data.images == 3000 and spec.train.epochs == 4 and spec.storage_root == str(tmp_path / "trials")  # type: ignore[union-attr]
    classify = yaml.safe_load((REPO / "jobs" / "shapes-classify.yaml").read_text())
    example = TrainJob.model_validate(classify)
    assert objective(_job({"train.lr": "uniform(0.001, 0.002)"}), example) == ("present_accuracy", "max")
    picked = _job({"train.lr": "uniform(0.001, 0.002)"}, tune={"metric": "train_loss", "mode": "min"})
    assert objective(picked, example) == ("train_loss", "min")


def test_a_local_trial_holds_its_workers_resources_itself() -> None:
    ray_trial = _job({"train.lr": "uniform(0.001, 0.002)"}, tune={"trial": {"cpus_per_worker": 2}}).tune.trial
    assert ray_trial.driver_resources() == {"memory": 256 * 2**20}, "a Train run's workers hold the CPUs"
    local = {"runner": "local", "cpus_per_worker": 2, "use_gpu": True, "driver_cpus": 0.5}
    local_trial = _job({"train.lr": "uniform(0.001, 0.002)"}, tune={"trial": local}).tune.trial
    assert local_trial.driver_resources() == {"memory": 256 * 2**20, "CPU": 2.5, "GPU": 1.0}
    with pytest.raises(ValueError, match="runner=local trains one worker in the trial's process, got num_workers=2"):
        _job({"train.lr": "uniform(0.001, 0.002)"}, tune={"trial": {"runner": "local", "num_workers": 2}})


@pytest.mark.parametrize("name", ["shapes-tune.yaml", "coco-tune.yaml"])
def test_the_repository_tune_jobs_are_valid_searches(name: str) -> None:
    job = load_job(REPO / "jobs" / name)
    assert isinstance(job, TuneJob)
    prepared = prepare_search(job)
    assert prepared.metric == "recall_mean" and prepared.trial_count == job.tune.num_samples


def test_data_prepare_of_a_tune_job_prepares_its_trials_data() -> None:
    from mmray.cli.data_commands import trial_job

    job = load_job(REPO / "jobs" / "shapes-tune.yaml")
    assert isinstance(job, TuneJob)
    data = trial_job(job).data
    assert (data.images, data.val_images) == (3000, 500)  # type: ignore[union-attr]


def test_population_based_training_refuses_what_cannot_change_while_a_trial_trains() -> None:
    def pbt(space: dict[str, str], base: dict[str, Any] = BASE, **tune: Any) -> None:
        scheduler = {"kind": "pbt", "perturbation_interval": 1, **tune.pop("scheduler", {})}
        prepare_search(_job(space, base=base, overrides={"train.epochs": 3}, tune={"scheduler": scheduler, **tune}))

    pbt({"train.lr": "loguniform(1e-4, 3e-3)", "task.loss.margin": "uniform(0.1, 0.5)"}, base=TRIPLET)
    with pytest.raises(ConfigError, match=r"space.task.loss.kind: a kind decides which parameters train"):
        pbt({"train.lr": "loguniform(1e-4, 3e-3)", "task.loss.kind": "choice([infonce, triplet])"})
    classify = yaml.safe_load((REPO / "jobs" / "shapes-classify.yaml").read_text())
    classify["model"]["fusion"] = {"kind": "weighted_sum"}
    pbt({"model.fusion.alpha": "uniform(0, 1)", "train.weight_decay": "uniform(0, 0.1)"}, base=classify)
    with pytest.raises(ConfigError, match=r"space.model.init_temperature: .*continues another trial's weights"):
        pbt({"model.init_temperature": "loguniform(0.02, 0.2)"})
    with pytest.raises(ConfigError, match=r"space.train.batch_size: .*search it with scheduler asha or fifo"):
        pbt({"train.batch_size": "choice([64, 128])"})
    with pytest.raises(ConfigError, match=r"space.data.images: "):
        pbt({"data.images": "choice([500, 1000])"})
    with pytest.raises(ConfigError, match=r"space.train.lr: grid\(...\) cannot be perturbed"):
        pbt({"train.lr": "grid([0.001, 0.002])"})
    with pytest.raises(ConfigError, match=r"perturbation_interval: 3 epochs is not less than the trials' 3"):
        pbt({"train.lr": "uniform(0.001, 0.002)"}, scheduler={"perturbation_interval": 3})
    with pytest.raises(ConfigError, match=r"population of at least 2"):
        pbt({"train.lr": "uniform(0.001, 0.002)"}, num_samples=1)
    with pytest.raises(ConfigError, match=r"tune.search.kind: population-based training explores by itself"):
        pbt({"train.lr": "uniform(0.001, 0.002)"}, search={"kind": "optuna"})
    with pytest.raises(ValueError, match=r"perturbation_factors must be positive"):
        pbt({"train.lr": "uniform(0.001, 0.002)"}, scheduler={"perturbation_factors": [1.2, -0.8]})


def test_perturbed_values_stay_inside_the_space() -> None:
    space = parse_space(
        {
            "train.lr": "loguniform(1e-4, 1e-3)",
            "train.warmup_fraction": "uniform(0, 0.5)",
            "task.loss.kind": "choice([infonce, triplet])",
            "train.log_every_steps": "randint(1, 4)",
        }
    )
    perturbed = {
        "train.lr": 1.2e-3,
        "train.warmup_fraction": -0.1,
        "task.loss.kind": "triplet",
        "train.log_every_steps": 4.8,
    }
    kept = keep_inside_space({"values": perturbed}, space)["values"]
    expected = {"train.lr": 1e-3, "train.warmup_fraction": 0.0, "task.loss.kind": "triplet", "train.log_every_steps": 4}
    assert kept == expected
    assert isinstance(kept["train.log_every_steps"], int)


def test_a_restored_trial_continues_its_own_run_or_starts_a_run_from_another_trials_checkpoint() -> None:
    assert next_segment("a1", None) == Segment("trial-a1", None)
    own = TrainPointer("a1", "trial-a1", "/runs/t/trials/trial-a1/checkpoint_epoch_0002", 2)
    assert next_segment("a1", own) == Segment("trial-a1", None), "Train resumes the run from its latest"
    donor = TrainPointer("b2", "trial-b2", "/runs/t/trials/trial-b2/checkpoint_epoch_0004", 4)
    continued = next_segment("a1", donor)
    assert continued == Segment("trial-a1-from-b2-e4", donor.checkpoint, "b2@4")
    again = TrainPointer("a1", continued.run, continued.run + "/checkpoint_epoch_0005", 5)
    assert next_segment("a1", again).run == "trial-a1-from-b2-e4"
