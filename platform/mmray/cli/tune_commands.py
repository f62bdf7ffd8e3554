"""`mmray tune`."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from mmray.cli.jobs import JOB, OVERRIDES, disconnect_ray, load_job_of_kind
from mmray.config import TuneJob
from mmray.errors import how_stopped


def tune(
    job: JOB,
    overrides: OVERRIDES = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted search of this name")] = False,
) -> None:
    """Search a training job's hyperparameters with Ray Tune; prints the trials table, and last a JSON
    line naming the best job (ready for `mmray train`), its model bundle, the results CSV and the best objective.
    Ctrl-C or SIGTERM stops a search with its state saved; --resume continues it.

    Example: mmray tune jobs/shapes-tune.yaml tune.num_samples=4
    """
    spec = load_job_of_kind(job, overrides, TuneJob, "tune")
    from mmray.tune.search import run_tune

    try:
        outcome = run_tune(spec, resume=resume)
    except KeyboardInterrupt as stop:
        if not str(stop):
            raise  # stopped at once (a second Ctrl-C): `interrupted`
        disconnect_ray()  # Ray's late log lines before the final word
        how, code = how_stopped(stop)
        command = shlex.join(["mmray", "tune", job, *(overrides or []), "--resume"])
        typer.echo(f"{how}: {stop}; `{command}` continues it", err=True)
        raise typer.Exit(code) from None
    disconnect_ray()
    typer.echo(outcome.table())
    typer.echo(json.dumps(outcome.summary()))
