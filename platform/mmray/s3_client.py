"""The S3 side of `mmray.storage`: the boto3 client for the current endpoint (its timeouts and tries from
`mmray.s3_settings`) and S3's errors named as StorageErrors. The only module that imports boto3 (on the
first S3 call, so local work runs where boto3 is not installed)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from mmray.errors import StorageAccessDeniedError, StorageError, StorageNotFoundError
from mmray.s3_settings import S3_ATTEMPTS, current_endpoint, mark_answered, read_timeout, s3_timeouts

_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
}
MULTIPART_THRESHOLD_BYTES = 16 * 1024 * 1024
"""Files above this upload in parts of this size, several at once (checkpoints, weights, index files)."""


@functools.cache
def transfer_config() -> Any:
    import boto3.s3.transfer

    return boto3.s3.transfer.TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD_BYTES, multipart_chunksize=MULTIPART_THRESHOLD_BYTES, max_concurrency=8
    )


_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_CHANGED_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


@functools.lru_cache(maxsize=8)
def _client_for(
    endpoint: str | None, region: str | None, credentials: tuple[str | None, ...], timeouts: tuple[float, float]
) -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(
        retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
        connect_timeout=timeouts[0],
        read_timeout=timeouts[1],
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=region or "us-east-1", config=config
    )


def client(transfer: bool = False) -> Any:
    """The S3 client for a request; `transfer`: one that moves object data (get, upload, download, copy)."""
    endpoint = current_endpoint()
    return _client_for(*endpoint, (s3_timeouts()[0], read_timeout(transfer, endpoint)))


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError, None for any other exception."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def is_missing(exc: BaseException) -> bool:
    return _error_code(exc) in _MISSING_CODES


def is_changed(exc: BaseException) -> bool:
    """A conditional write refused because the object is no longer the version it was conditioned on."""
    return _error_code(exc) in _CHANGED_CODES


def _translate_client_error(uri: str, exc: BaseException) -> StorageError:
    code = _error_code(exc)
    if code in _MISSING_CODES:
        return StorageNotFoundError(f"{uri}: does not exist ({code})")
    if code in _DENIED_CODES:
        return StorageAccessDeniedError(
            f"{uri}: S3 refused the request ({code}); check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and the bucket's permissions"
        )
    return StorageError(f"{uri}: S3 error {code}: {exc}")


@contextlib.contextmanager
def s3_errors(uri: str, transfer: bool = False) -> Iterator[None]:
    """S3 errors of the calls inside as StorageErrors naming `uri`; an answer (an S3 error code is one)
    marks the endpoint as alive, so that later transfers get their long read timeout."""
    endpoint = current_endpoint()
    try:
        yield
    except Exception as exc:
        if _error_code(exc) is not None:
            mark_answered(endpoint)
        translated = _translate_s3_error(uri, exc, read_timeout(transfer, endpoint))
        if translated is None:
            raise
        raise translated from exc
    mark_answered(endpoint)


def _translate_s3_error(uri: str, exc: Exception, read_timeout: float) -> StorageError | None:
    """The StorageError that names what went wrong with an S3 call; None for errors of another kind."""
    import boto3.exceptions
    import botocore.exceptions

    if _error_code(exc) is not None:
        return _translate_client_error(uri, exc)
    if isinstance(exc, boto3.exceptions.S3UploadFailedError):
        cause = exc.__context__
        if cause is not None and _error_code(cause) is not None:
            return _translate_client_error(uri, cause)
        return StorageError(f"{uri}: upload failed: {exc}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageAccessDeniedError(
            f"{uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return StorageError(f"{uri}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL")
    timeouts = (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectionClosedError)  # fmt: skip
    if isinstance(exc, timeouts):
        connect, _, read = s3_timeouts()
        setting = "MMRAY_S3_READ_TIMEOUT" if read_timeout == read else "MMRAY_S3_METADATA_TIMEOUT"
        return StorageError(
            f"{uri}: the S3 endpoint did not answer ({type(exc).__name__}; {S3_ATTEMPTS} tries, timeouts "
            f"{connect:g} s to connect and {read_timeout:g} s to read); check AWS_ENDPOINT_URL, or raise {setting}"
        )
    return None
