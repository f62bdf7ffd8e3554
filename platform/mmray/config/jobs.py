"""Job specs: the typed content of a `jobs/*.yaml` file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from mmray.config.base import (
    ConfigError,
    Section,
    deep_merge,
    parse_overrides,
    read_yaml_mapping,
    validate,
)
from mmray.config.data import DataConfig
from mmray.config.indexing import IndexSettings
from mmray.config.model import ModelConfig
from mmray.config.training import InfoNceLossConfig, LossConfig, TrainSettings

JobKind = Literal["train", "tune", "index", "evaluate"]


class JobSpec(Section):
    """A runnable job: what runs (`kind`), its name, where it writes, its data, model and training."""

    kind: JobKind
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage_root: str = Field("runs", description="local directory or s3:// prefix for all outputs")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=lambda: InfoNceLossConfig(kind="infonce"))
    train: TrainSettings = Field(default_factory=TrainSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    checkpoint: str | None = Field(
        None,
        description="model bundle, or a training run directory (its final bundle), or for evaluate an "
        "index bundle; path or s3:// URI",
    )


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> JobSpec:
    """Load a job spec from YAML, apply `section.key=value` overrides and validate it."""
    raw = read_yaml_mapping(path)
    merged = deep_merge(raw, parse_overrides(overrides))
    source = str(path) + (" (with overrides)" if overrides else "")
    if "kind" not in merged:
        raise ConfigError(f"{source}: missing top-level 'kind' (one of train, tune, index, evaluate)")
    return validate(JobSpec, merged, source)
