"""Local paths and `s3://bucket/prefix` URIs as strings: joining, splitting, relating; no I/O."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from mmray.errors import StorageError

S3_SCHEME = "s3://"


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith(S3_SCHEME)


def absolute_uri(uri: str) -> str:
    """A local path made absolute (Ray workers run in other directories); s3:// URIs unchanged."""
    return uri if is_s3(uri) else str(Path(uri).resolve())


def uri_under(path: str, root: str) -> str:
    """A path that pyarrow reported under `root` as a URI (its S3 paths come without the scheme)."""
    return f"{S3_SCHEME}{path}" if is_s3(root) and not is_s3(path) else path


def join(base: str | Path, *parts: str) -> str:
    """Join path components below a local path or an S3 URI."""
    if is_s3(base):
        return posixpath.join(str(base), *parts)
    return os.path.join(str(base), *parts)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b`)."""
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"S3 URI {uri!r} names no bucket; expected s3://bucket/key")
    return bucket, key


def relative_to(uri: str, base: str) -> str:
    """The part of `uri` below `base`, with forward slashes."""
    base_norm = str(base).rstrip("/") + "/"
    if is_s3(uri):
        if not uri.startswith(base_norm):
            raise StorageError(f"{uri} is not below {base}")
        return uri[len(base_norm) :]
    return Path(uri).relative_to(Path(base)).as_posix()
