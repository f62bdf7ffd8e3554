"""Typed configs loaded from YAML job specs."""

from mmray.config.base import parse_overrides, to_yaml
from mmray.config.data import ShapesData
from mmray.config.jobs import EvaluateJob, IndexJob, TrainJob, load_job, validate_job
from mmray.config.pipeline import PipelineJob
from mmray.config.tuning import TuneJob
from mmray.errors import ConfigError

__all__ = [
    "ConfigError",
    "EvaluateJob",
    "IndexJob",
    "PipelineJob",
    "ShapesData",
    "TrainJob",
    "TuneJob",
    "load_job",
    "parse_overrides",
    "to_yaml",
    "validate_job",
]
