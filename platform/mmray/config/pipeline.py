"""Pipeline jobs: tune (optional) → train → index → evaluate on held-out data → promote past a gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmray.config.base import NAME_PATTERN, Section
from mmray.config.data import DataConfig, require_split
from mmray.config.indexing import IndexSettings


class GateSettings(Section):
    """What a candidate must do on the held-out data to replace the model being served."""

    split: str = Field("val", description="the split of `holdout` the candidate and the served model are scored on")
    metric: str | None = Field(
        None, description="the metric compared; default: the task's score (recall_mean, a head's accuracy, …)"
    )
    mode: Literal["max", "min"] | None = Field(None, description="higher or lower is better; default: the task's")
    margin: float = Field(0.0, ge=0.0, description="by how much the candidate must beat the served model")
    batch_size: int = Field(256, ge=1, description="rows per batch when scoring")


class PromoteSettings(Section):
    """Where a promoted pair goes besides the registry: a running app, hot-reloaded."""

    serve: str | None = Field(None, description="URL of a running mmray app to hot-reload (none: registry only)")
    model: str = Field("retrieval", description="the served model name the candidate replaces")
    admin_key_env: str = Field("MMRAY_ADMIN_KEY", description="environment variable holding an admin key")


class PipelineJob(Section):
    """Stages each skipped when their output exists for the same inputs, so a rerun continues where one
    stopped: `tune` (optional) → `train` (the best trial's job, or `train`) → `index` → `evaluate` (on
    `holdout`, next to the served model) → `promote` (when the candidate beats it by `gate.margin`)."""

    kind: Literal["pipeline"]
    name: str = Field(pattern=NAME_PATTERN)
    storage_root: str = Field("runs", description="local directory or s3:// prefix: stages' runs and the registry")
    tune: str | None = Field(None, description="a tune job file (relative to this file); its best trial trains")
    train: str | None = Field(None, description="a train job file (relative to this file), when there is no tune")
    runner: Literal["ray", "local"] = Field("ray", description="train on Ray Train, or in this process (--local)")
    index: IndexSettings | None = Field(
        default_factory=IndexSettings, description="the index built with the candidate; null: no index (a classifier)"
    )
    holdout: DataConfig = Field(description="data no stage trains or tunes on; `gate.split` of it scores the models")
    gate: GateSettings = Field(default_factory=GateSettings)
    promote: PromoteSettings = Field(default_factory=PromoteSettings)

    @model_validator(mode="after")
    def _one_source(self) -> PipelineJob:
        if (self.tune is None) == (self.train is None):
            raise ValueError("name exactly one of tune (a search whose best trial trains) or train (a train job)")
        require_split(self.holdout, self.gate.split, "gate.split")
        return self
