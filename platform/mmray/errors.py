"""User-facing exceptions. The CLI names these without importing torch, faiss or boto3."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any


class MmrayError(Exception):
    """Base of every error a user can cause and fix: the message says what was wrong."""


class ConfigError(MmrayError, ValueError):
    """A job spec or override that cannot be turned into a valid config."""


class DataError(MmrayError, ValueError):
    """A dataset that cannot be used as given; `report` says which images were bad, when known."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.report)  # the report survives pickling (a child's refusal)


class ImageDecodeError(DataError):
    """An image file exists but cannot be decoded."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header claims more pixels than the limit (a decompression bomb, or a huge image)."""


class StorageError(MmrayError, RuntimeError):
    """A storage operation failed; the message names the URI and the cause."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, file or bucket does not exist."""


class StorageAccessDeniedError(StorageError, PermissionError):
    """The storage refused the request (wrong credentials or missing permission)."""


class WeightsError(MmrayError, ValueError):
    """A weight file that does not fit the model: names the keys and shapes that differ."""


class BundleError(MmrayError, ValueError):
    """A model bundle that is missing, incomplete, or of a format this version cannot read."""


class IndexBundleError(MmrayError, ValueError):
    """An index bundle that is missing, incomplete, or built with another model."""


class TrainingError(MmrayError, RuntimeError):
    """A training run that failed after exhausting its retries."""


class QueryError(MmrayError, ValueError):
    """A search query that cannot be answered as given (no text or image, empty text, bad settings)."""


class MissingModalityError(MmrayError, ValueError):
    """A model was asked to fuse inputs with a modality it needs left out."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, a stopped Ray job) in a process connected to Ray: stops the work
    the way Ctrl-C does, with exit code 143."""


def how_stopped(stop: KeyboardInterrupt) -> tuple[str, int]:
    """The word and exit code for work stopped by SIGTERM (`Terminated`, 143) or Ctrl-C (130)."""
    return ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)


def json_object(text: str | bytes) -> dict[str, Any]:
    """A JSON text that must hold an object (for use inside `reading`)."""
    content = json.loads(text)
    if not isinstance(content, dict):
        raise TypeError(f"expected a JSON object, got {type(content).__name__}")
    return content


@contextlib.contextmanager
def reading(where: object, error: type[MmrayError]) -> Iterator[None]:
    """Any failure other than mmray's own while reading the file `where` (truncated, edited, replaced: a JSON,
    YAML, safetensors or faiss error, a missing key, a wrong type) becomes `error` naming it."""
    try:
        yield
    except MmrayError:
        raise
    except Exception as exc:
        raise error(f"{where} is damaged or not what mmray wrote ({type(exc).__name__}: {exc})") from None
