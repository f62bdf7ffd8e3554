"""Which S3 endpoint a call goes to and how long it may take: timeouts from the environment, and whether
the endpoint has answered in this process (until it has, every request gets the short timeout)."""

from __future__ import annotations

import os

from mmray.errors import StorageError

Endpoint = tuple[str | None, str | None, tuple[str | None, ...]]
"""(endpoint URL, region, credentials): what an S3 client is made for."""
S3_ATTEMPTS = 3
S3_TIMEOUTS = (("MMRAY_S3_CONNECT_TIMEOUT", 5.0), ("MMRAY_S3_METADATA_TIMEOUT", 5.0), ("MMRAY_S3_READ_TIMEOUT", 60.0))
"""Seconds: to connect; to read the answer of a request that moves no object data (head, list, delete),
and of any request to an endpoint that has not answered yet in this process; to read during transfers."""
_answered: set[Endpoint] = set()


def current_endpoint() -> Endpoint:
    """The endpoint, region and credentials the AWS variables name now."""
    env = os.environ
    credentials = tuple(
        env.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    )
    return (
        env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        credentials,
    )


def s3_timeouts() -> tuple[float, float, float]:
    """(connect, metadata read, transfer read) timeouts of S3 calls in seconds, from `S3_TIMEOUTS`' variables."""
    values = []
    for name, default in S3_TIMEOUTS:
        raw = os.environ.get(name, "")
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = 0.0
        if not value > 0:
            raise StorageError(f"{name}={raw!r}: expected a positive number of seconds")
        values.append(value)
    return values[0], values[1], values[2]


def read_timeout(transfer: bool, endpoint: Endpoint) -> float:
    """A transfer's read timeout once the endpoint has answered; the short metadata one otherwise, so that a
    command's first request to a dead endpoint fails within S3_ATTEMPTS short waits."""
    _, metadata, read = s3_timeouts()
    return read if transfer and endpoint in _answered else min(metadata, read)


def mark_answered(endpoint: Endpoint) -> None:
    _answered.add(endpoint)
