"""The tune job: a base training job, a search space over its dotted keys, and how Ray Tune searches."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mmray.config.base import NAME_PATTERN, Section


class AshaScheduler(Section):
    """Asynchronous successive halving: trials behind at a rung (1, 2, 4, ... epochs) stop early."""

    kind: Literal["asha"]
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1.0, description="keep the best 1/η of trials at each rung")


class FifoScheduler(Section):
    """Every trial runs to the end."""

    kind: Literal["fifo"]


class PbtScheduler(Section):
    """Population-based training: every `perturbation_interval` epochs a trial in the bottom quantile
    continues from a top trial's checkpoint with that trial's values perturbed (continuous values × 0.8
    or × 1.2, kept inside their range; choices moved to a neighbouring value) or, with
    `resample_probability`, drawn anew. Trials keep every checkpoint (a lagging trial may copy any)."""

    kind: Literal["pbt"]
    perturbation_interval: int = Field(2, ge=1, description="epochs between exploit/explore steps of a trial")
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5, description="share of trials copied, and copied from")
    resample_probability: float = Field(0.25, ge=0.0, le=1.0, description="chance a value is drawn anew")
    perturbation_factors: tuple[float, float] = Field((1.2, 0.8), description="factors for continuous values")
    synch: bool = Field(False, description="wait for every trial to reach the interval before exploiting")

    @model_validator(mode="after")
    def _factors(self) -> PbtScheduler:
        if any(factor <= 0.0 for factor in self.perturbation_factors):
            raise ValueError(f"perturbation_factors must be positive, got {list(self.perturbation_factors)}")
        return self


SchedulerConfig = Annotated[AshaScheduler | FifoScheduler | PbtScheduler, Field(discriminator="kind")]


class SearchAlgorithm(Section):
    """random: samples the space (grid(...) keys are crossed); optuna: TPE, guided by finished trials."""

    kind: Literal["random", "optuna"] = "random"
    seed: int | None = Field(0, ge=0, le=2**32 - 1, description="seed of the sampler (None: a new search each time)")


class TrialResources(Section):
    """Each trial is a Ray Train run with these workers (its Tune driver takes `driver_cpus`), or with
    `runner: local` one worker's loop inside the trial's own process."""

    runner: Literal["ray", "local"] = Field(
        "ray",
        description="ray: each trial is a Ray Train run; local: a one-worker trial trains in its Tune process, "
        "without a Train run's own processes (fast for small models; no DDP, Tune's max_failures retries it)",
    )
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool = False
    driver_cpus: float = Field(
        0.0, ge=0.0, description="CPUs reserved for each trial's driver process (it mostly waits on its Train run)"
    )
    driver_memory_mb: int = Field(256, ge=1, description="memory reserved for each trial's driver process")

    @model_validator(mode="after")
    def _one_local_worker(self) -> TrialResources:
        if self.runner == "local" and self.num_workers != 1:
            workers = self.num_workers
            raise ValueError(f"runner=local trains one worker in the trial's process, got num_workers={workers}")
        return self

    def driver_resources(self) -> dict[str, float]:
        """The trial driver's Ray resources: memory, and CPUs only when asked for, so that trials whose
        workers fill every core still run side by side. A local trial holds its worker's CPUs and GPU."""
        memory = {"memory": self.driver_memory_mb * 2**20}
        if self.runner == "local":
            return {**memory, "CPU": self.driver_cpus + self.cpus_per_worker, **({"GPU": 1.0} if self.use_gpu else {})}
        return {**memory, **({"CPU": self.driver_cpus} if self.driver_cpus else {})}


class TuneSettings(Section):
    """What to optimise and how many trials to run."""

    metric: str | None = Field(None, description="a reported metric; default: the task's score (e.g. recall_mean)")
    mode: Literal["max", "min"] | None = Field(None, description="default: the task's (or max)")
    num_samples: int = Field(8, ge=1, description="trials (each grid(...) combination counts once per sample)")
    max_concurrent_trials: int = Field(1, ge=1, description="Train runs in flight at once")
    scheduler: SchedulerConfig = Field(default_factory=lambda: AshaScheduler(kind="asha"))
    search: SearchAlgorithm = Field(default_factory=SearchAlgorithm)
    trial: TrialResources = Field(default_factory=TrialResources)
    max_failures: int = Field(1, ge=0, description="restarts of a trial whose driver fails")


class TuneJob(Section):
    """Search a training job's hyperparameters with Ray Tune: each trial is a Ray Train run of `base`
    with `overrides` and the trial's values of `space` applied."""

    kind: Literal["tune"]
    name: str = Field(pattern=NAME_PATTERN)
    storage_root: str = Field("runs", description="local directory or s3:// prefix for trials and Tune's state")
    base: str | dict[str, Any] = Field(description="the training job: a YAML file, or the job inline")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted keys set in every trial (e.g. fewer epochs, smaller data)"
    )
    space: dict[str, str] = Field(
        description="dotted key → uniform(a, b) | loguniform(a, b) | randint(a, b) | choice([...]) | grid([...])"
    )
    tune: TuneSettings = Field(default_factory=TuneSettings)

    @model_validator(mode="after")
    def _not_empty(self) -> TuneJob:
        if not self.space:
            raise ValueError("space: name at least one key to search, e.g. train.lr: loguniform(1e-4, 3e-3)")
        overlap = sorted(set(self.space) & set(self.overrides))
        if overlap:
            raise ValueError(f"space and overrides both set {', '.join(overlap)}; keep each key in one of them")
        return self
