"""Loading the job a command needs, with a clear error when a job of another kind is given."""

from __future__ import annotations

import sys
from typing import Annotated, TypeVar

import typer

from mmray.config import ConfigError, EvaluateJob, IndexJob, PipelineJob, TrainJob, TuneJob, load_job
from mmray.config.kind_switch import kinds_of

JOB = Annotated[str, typer.Argument(help="job spec YAML, e.g. jobs/shapes-clip.yaml")]
OVERRIDES = Annotated[list[str] | None, typer.Argument(help="section.key=value overrides")]
DEVICE = Annotated[str, typer.Option(help="auto (this machine's GPU when it has one), cpu, cuda or cuda:N")]

JobT = TypeVar("JobT", TrainJob, IndexJob, EvaluateJob, TuneJob, PipelineJob)


def disconnect_ray() -> None:
    """Shut down a Ray this process started (none when the command ran without Ray)."""
    if "ray" in sys.modules:
        from mmray.cluster.connection import disconnect

        disconnect()


def load_job_of_kind(path: str, overrides: list[str] | None, expected: type[JobT], command: str) -> JobT:
    """The job at `path` (with overrides) when it is of the kind `command` runs."""
    spec = load_job(path, overrides or [])
    if not isinstance(spec, expected):
        wanted = kinds_of(expected)[0]
        article = "an" if spec.kind[0] in "aeiou" else "a"
        raise ConfigError(f"{path} is {article} {spec.kind!r} job; `mmray {command}` runs {wanted!r} jobs")
    return spec
