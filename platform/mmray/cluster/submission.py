"""mmray jobs on a Ray cluster through the Ray Jobs API: submitting a checked job spec with the project as
working directory, following its logs, and the job's status as an exit code. The client adds Ray's token
header itself when token auth is on (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or a token file)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mmray import storage
from mmray.cluster.ray_compat import left_out_of_upload
from mmray.config.jobs import load_job
from mmray.errors import ConfigError, MmrayError

logger = logging.getLogger(__name__)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_ENV = "RAY_DASHBOARD_ADDRESS"
EXCLUDES = ["/.venv/", "/data/", "/runs/", "/.git/", "**/__pycache__/", "*.egg-info/", "**/.mmray-tmp-*"]
"""Never uploaded with the working directory: environments, data, outputs and caches (gitignore patterns, as
Ray matches them: the top-level folders only, not `platform/mmray/data`)."""
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "MMRAY_S3_CONNECT_TIMEOUT",
    "MMRAY_S3_METADATA_TIMEOUT",
    "MMRAY_S3_READ_TIMEOUT",
    "MMRAY_MAX_IMAGE_PIXELS",
    "RAY_AUTH_MODE",
)
"""Passed to the job when set here. Credentials are not: Ray writes a runtime env's variables to its
logs, so nodes use their own (instance profile, or variables set where `ray start` ran), or `--env`."""
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 3}


class SubmissionError(MmrayError):
    """The Jobs API could not be reached or refused a request."""


def dashboard_address(address: str | None) -> str:
    """`address`, else $RAY_DASHBOARD_ADDRESS, else the local dashboard."""
    chosen = address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"the Jobs API address must be http:// or https://, e.g. {DEFAULT_ADDRESS}; got {chosen!r}")
    return chosen


def jobs_client(address: str | None) -> Any:
    """A `JobSubmissionClient` for the cluster's dashboard."""
    from ray.job_submission import JobSubmissionClient

    chosen = dashboard_address(address)
    try:
        return JobSubmissionClient(chosen)
    except (ConnectionError, RuntimeError) as exc:
        raise SubmissionError(f"cannot reach the Ray Jobs API at {chosen}: {exc}") from None


def submit_job(
    job: Path,
    overrides: Sequence[str],
    address: str | None = None,
    working_dir: Path = Path("."),
    env: dict[str, str] | None = None,
) -> str:
    """Check the spec, then submit it with `working_dir` uploaded; returns the submission id."""
    spec = load_job(job, list(overrides))
    root = working_dir.resolve()
    try:
        relative = job.resolve().relative_to(root)
    except ValueError:
        raise ConfigError(f"{job} is outside the working directory {root}, which is what the job gets") from None
    if left_out_of_upload(EXCLUDES, relative.as_posix()):
        raise ConfigError(
            f"{relative.as_posix()} is left out of the upload (data/, runs/ and environments are not sent to the "
            "cluster): copy it under jobs/ and submit the copy"
        )
    root_setting = getattr(spec, "storage_root", None)
    if isinstance(root_setting, str) and not storage.is_s3(root_setting):
        logger.warning(
            "storage_root %s is a local path: on a multi-node cluster use s3:// so every node reads the "
            "checkpoints the others wrote",
            root_setting,
        )
    client = jobs_client(address)
    forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    try:
        result: str = client.submit_job(
            entrypoint=shlex.join(["mmray", spec.kind, relative.as_posix(), *overrides]),
            submission_id=f"mmray-{spec.kind}-{spec.name}-{uuid.uuid4().hex[:8]}",
            runtime_env={"working_dir": str(root), "excludes": EXCLUDES, "env_vars": {**forwarded, **(env or {})}},
            metadata={"mmray_job": relative.as_posix(), "mmray_kind": spec.kind},
        )
    except (ConnectionError, RuntimeError) as exc:
        raise SubmissionError(f"the Ray Jobs API at {dashboard_address(address)} refused the job: {exc}") from None
    return result


def follow_job(address: str | None, submission_id: str, out: TextIO = sys.stdout) -> str:
    """Print the job's logs as they come until it ends; returns its final status."""
    client = jobs_client(address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            out.write(lines)
            out.flush()

    try:
        asyncio.run(tail())
        return str(client.get_job_status(submission_id).value)
    except (ConnectionError, RuntimeError) as exc:
        raise SubmissionError(f"lost the job {submission_id} at {dashboard_address(address)}: {exc}") from None


def exit_code(status: str) -> int:
    """0 for a job that succeeded, 1 for one that failed, 3 for one stopped; 4 while it has not ended."""
    return EXIT_CODES.get(status, 4)
