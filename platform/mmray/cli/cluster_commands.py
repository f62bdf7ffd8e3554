"""`mmray submit` and `mmray jobs`: mmray jobs on a Ray cluster through the Ray Jobs API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmray.cli.jobs import OVERRIDES

ADDRESS = Annotated[
    str | None,
    typer.Option(help="the cluster's dashboard, e.g. http://HEAD:8265 [default: $RAY_DASHBOARD_ADDRESS or local]"),
]
SUBMISSION = Annotated[str, typer.Argument(help="submission id, as `mmray submit` printed it")]

app = typer.Typer(help="List, inspect, follow and stop jobs on a Ray cluster.", no_args_is_help=True)


def _env_pairs(entries: list[str] | None) -> dict[str, str]:
    from mmray.errors import ConfigError

    pairs = {}
    for entry in entries or []:
        name, separator, value = entry.partition("=")
        if not separator or not name:
            raise ConfigError(f"--env takes NAME=value, got {entry!r}")
        pairs[name] = value
    return pairs


def submit(
    job: Annotated[Path, typer.Argument(help="job spec YAML inside the working directory")],
    overrides: OVERRIDES = None,
    address: ADDRESS = None,
    working_dir: Annotated[Path, typer.Option(help="uploaded as the job's working directory")] = Path("."),
    env: Annotated[list[str] | None, typer.Option(help="NAME=value for the job (repeat)")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the logs until the job ends")] = True,
) -> None:
    """Submit a job spec to a Ray cluster: checked here first, the working directory uploaded (without
    .venv, data, runs, .git); prints the submission id, follows the logs and exits with the job's status
    (0 succeeded, 1 failed, 3 stopped).

    Example: mmray submit jobs/coco-clip.yaml --address http://HEAD:8265 train.epochs=5
    """
    from mmray.cluster.submission import exit_code, follow_job, submit_job

    submission_id = submit_job(job, overrides or [], address, working_dir, _env_pairs(env))
    typer.echo(f"submitted {submission_id}", err=True)
    if not wait:
        typer.echo(json.dumps({"submission_id": submission_id}))
        return
    status = follow_job(address, submission_id)
    typer.echo(json.dumps({"submission_id": submission_id, "status": status}))
    raise typer.Exit(exit_code(status))


@app.command("list")
def list_jobs(address: ADDRESS = None) -> None:
    """Jobs on the cluster, newest first: id, status, entrypoint.

    Example: mmray jobs list --address http://HEAD:8265
    """
    from mmray.cluster.submission import jobs_client

    details = sorted(jobs_client(address).list_jobs(), key=lambda job: job.start_time or 0, reverse=True)
    for job in details:
        typer.echo(f"{job.submission_id or job.job_id}\t{job.status.value}\t{job.entrypoint}")


@app.command("status")
def status(submission_id: SUBMISSION, address: ADDRESS = None) -> None:
    """The job's status and message; the exit code follows the status (0 succeeded, 1 failed, 3 stopped,
    4 not ended).

    Example: mmray jobs status mmray-train-shapes-clip-1a2b3c4d --address http://HEAD:8265
    """
    from mmray.cluster.submission import exit_code, jobs_client

    info = jobs_client(address).get_job_info(submission_id)
    typer.echo(json.dumps({"submission_id": submission_id, "status": info.status.value, "message": info.message}))
    raise typer.Exit(exit_code(info.status.value))


@app.command("logs")
def logs(
    submission_id: SUBMISSION,
    address: ADDRESS = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
) -> None:
    """The job's logs so far (or followed to its end).

    Example: mmray jobs logs mmray-train-shapes-clip-1a2b3c4d -f
    """
    from mmray.cluster.submission import follow_job, jobs_client

    if follow:
        follow_job(address, submission_id)
        return
    typer.echo(jobs_client(address).get_job_logs(submission_id), nl=False)


@app.command("stop")
def stop(submission_id: SUBMISSION, address: ADDRESS = None) -> None:
    """Ask the cluster to stop the job.

    Example: mmray jobs stop mmray-train-shapes-clip-1a2b3c4d
    """
    from mmray.cluster.submission import jobs_client

    stopped = jobs_client(address).stop_job(submission_id)
    typer.echo(json.dumps({"submission_id": submission_id, "stop_requested": bool(stopped)}))
