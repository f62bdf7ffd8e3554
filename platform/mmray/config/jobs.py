"""Job specs: the typed content of a `jobs/*.yaml` file, one schema per `kind`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mmray.config import fusion, generation, prediction  # noqa: F401 (importing them registers their kinds)
from mmray.config.base import NAME_PATTERN, Section, parse_overrides, read_yaml_mapping, validate
from mmray.config.data import CocoData, DataConfig, ShapesData, require_split
from mmray.config.evaluation import EvaluateSettings
from mmray.config.indexing import IndexSettings
from mmray.config.kind_switch import kinds_of, merge_switching_kinds
from mmray.config.model import DualEncoderConfig, ModelConfig
from mmray.config.pipeline import PipelineJob
from mmray.config.tasks import TaskConfig
from mmray.config.training import TrainSettings
from mmray.config.tuning import TuneJob
from mmray.errors import ConfigError

logger = logging.getLogger(__name__)


class TrainJob(Section):
    """Train a model (`model.kind`) for a task (`task.kind`) on Ray Train; re-running a name resumes it."""

    kind: Literal["train"]
    name: str = Field(pattern=NAME_PATTERN)
    storage_root: str = Field("runs", description="local directory or s3:// prefix for all outputs")
    data: DataConfig
    model: ModelConfig
    task: TaskConfig
    train: TrainSettings = Field(default_factory=TrainSettings)
    init_from: str | None = Field(
        None,
        description="warm start: a model bundle (or training run) whose weights and processor the run starts from",
    )
    continue_from: str | None = Field(
        None,
        description="a checkpoint of another run (or a run: its latest) to continue from: weights, optimizer "
        "state, epochs done and processor; this job's training settings (lr, weight decay, ...) apply from there",
    )

    @field_validator("data")
    @classmethod
    def _train_split(cls, data: CocoData | ShapesData) -> CocoData | ShapesData:
        return require_split(data, "train", "a train job")

    @model_validator(mode="after")
    def _start(self) -> TrainJob:
        if self.init_from and self.continue_from:
            raise ValueError("set init_from (weights only) or continue_from (the whole training state), not both")
        nested = getattr(self.model, "encoder", None)
        if isinstance(nested, DualEncoderConfig) and nested.init_projections == "procrustes":
            raise ValueError(
                f"init_projections=procrustes starts a retrieval model's heads; model.kind {self.model.kind!r} "
                "trains its encoder's heads with its own task, so leave model.encoder.init_projections at random"
            )
        if not isinstance(self.model, DualEncoderConfig) or self.model.init_projections != "procrustes":
            return self
        if self.task.kind != "retrieval":
            raise ValueError(f"model.init_projections=procrustes needs task.kind retrieval, got {self.task.kind!r}")
        if self.init_from:
            raise ValueError("model.init_projections=procrustes computes the heads' start; drop it or init_from")
        return self


class IndexJob(Section):
    """Embed a split with a model bundle (on Ray Data, or in this process) and build faiss indexes over it."""

    kind: Literal["index"]
    name: str = Field(pattern=NAME_PATTERN)
    storage_root: str = Field("runs", description="local directory or s3:// prefix for all outputs")
    checkpoint: str = Field(description="model bundle, or a training run directory (its best bundle)")
    index: IndexSettings = Field(default_factory=IndexSettings)
    data: DataConfig = Field(description="needs only the split it indexes (index.split)")

    @field_validator("data")
    @classmethod
    def _indexed_split(cls, data: CocoData | ShapesData, info: ValidationInfo) -> CocoData | ShapesData:
        settings = info.data.get("index")  # validated before `data`, declared above it
        return data if settings is None else require_split(data, settings.split, f"index.split {settings.split!r}")


class EvaluateJob(Section):
    """Evaluate a model bundle with its task's metrics, or an index bundle through its indexes."""

    kind: Literal["evaluate"]
    name: str = Field("evaluate", pattern=NAME_PATTERN)
    checkpoint: str = Field(description="model bundle, training run directory, or index bundle")
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    data: DataConfig = Field(description="needs only the split it evaluates on (evaluate.split)")

    @field_validator("data")
    @classmethod
    def _evaluated_split(cls, data: CocoData | ShapesData, info: ValidationInfo) -> CocoData | ShapesData:
        settings = info.data.get("evaluate")  # validated before `data`, declared above it
        return data if settings is None else require_split(data, settings.split, f"evaluate.split {settings.split!r}")


AnyJob = TrainJob | IndexJob | EvaluateJob | TuneJob | PipelineJob
JOB_CLASSES: dict[str, type[AnyJob]] = {kinds_of(job)[0]: job for job in get_args(AnyJob)}


def validate_job(data: dict[str, object], source: str) -> AnyJob:
    """Validate a job mapping by its `kind`, raising ConfigError with readable messages."""
    kind = data.get("kind")
    if kind not in JOB_CLASSES:
        got = "missing" if kind is None else f"{kind!r}"
        raise ConfigError(f"{source}: top-level 'kind' is {got}; job kinds: {', '.join(JOB_CLASSES)}")
    return validate(JOB_CLASSES[str(kind)], data, source)


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> AnyJob:
    """Load a job spec from YAML, apply `section.key=value` overrides (see merge_switching_kinds), validate it."""
    raw = read_yaml_mapping(path)
    updates = parse_overrides(overrides)
    job_class = JOB_CLASSES.get(str(updates.get("kind", raw.get("kind"))))
    merged, dropped = merge_switching_kinds(raw, updates, job_class)
    if dropped:
        logger.warning("a section's kind changed; keys the new kind does not take were dropped: %s", ", ".join(dropped))
    return validate_job(merged, str(path) + (" (with overrides)" if overrides else ""))
