"""`mmray tune`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mmray.cli.jobs import JOB, OVERRIDES, load_job_of_kind
from mmray.config import TuneJob


def tune(
    job: JOB,
    overrides: OVERRIDES = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted search of this name")] = False,
) -> None:
    """Search a training job's hyperparameters with Ray Tune; prints the trials table, and last a JSON
    line naming the best job (ready for `mmray train`), its model bundle, the results CSV and the best objective.

    Example: mmray tune jobs/shapes-tune.yaml tune.num_samples=4
    """
    spec = load_job_of_kind(job, overrides, TuneJob, "tune")
    from mmray.raycluster import disconnect
    from mmray.tune.search import run_tune

    outcome = run_tune(spec, resume=resume)
    disconnect()
    typer.echo(outcome.table())
    typer.echo(json.dumps(outcome.summary()))
