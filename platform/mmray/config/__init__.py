"""Typed configs loaded from YAML job specs."""

from mmray.config.base import ConfigError, Section, parse_overrides, to_yaml
from mmray.config.data import CocoData, CocoSplit, DataConfig, ShapesData
from mmray.config.jobs import JobSpec, load_job

__all__ = [
    "CocoData",
    "CocoSplit",
    "ConfigError",
    "DataConfig",
    "JobSpec",
    "Section",
    "ShapesData",
    "load_job",
    "parse_overrides",
    "to_yaml",
]
