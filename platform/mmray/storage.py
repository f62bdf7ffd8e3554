"""One interface over local paths and `s3://bucket/prefix` URIs (S3 through `mmray.s3_client`), and the URIs
as strings: joined, split and related without I/O.

Writes are atomic: a local file is written to a temporary sibling and renamed into place; an S3 object
becomes visible only when its (multipart) upload completes, which S3 guarantees to be all or nothing.
`read_versioned` and `write_bytes_if` let S3 writers change one object at once, none's change lost (a write
conditional on the version read).
The S3 endpoint comes from `AWS_ENDPOINT_URL`, credentials from the usual AWS variables or files.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmray.errors import StorageError, StorageNotFoundError
from mmray.s3_client import client, is_changed, is_missing, s3_errors, transfer_config
from mmray.s3_settings import current_endpoint

S3_SCHEME = "s3://"
_TEMP_MARK = ".mmray-tmp-"


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
    joined: str = (posixpath if is_s3(base) else os.path).join(str(base), *parts)
    return joined


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


def s3_object_info(uri: str) -> dict[str, Any]:
    """Size and ETag of an S3 object (the ETag of a multipart upload ends in -<parts>)."""
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        head = client().head_object(Bucket=bucket, Key=key)
    return {"size": int(head["ContentLength"]), "etag": str(head["ETag"]).strip('"')}


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f"{_TEMP_MARK}{uuid.uuid4().hex}-{path.name}")


def _is_temp(name: str) -> bool:
    return posixpath.basename(name).startswith(_TEMP_MARK)


@contextlib.contextmanager
def atomic_output(uri: str | Path) -> Iterator[Path]:
    """Yield a local file path to write; on success it appears at `uri` whole, else not at all."""
    uri = str(uri)
    if is_s3(uri):
        with tempfile.TemporaryDirectory(prefix="mmray-upload-") as tmp:
            staged = Path(tmp) / posixpath.basename(uri.rstrip("/"))
            yield staged
            upload_file(staged, uri)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = _temp_sibling(target)
    try:
        yield staged
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write `data` to `uri` atomically."""
    with atomic_output(uri) as staged:
        staged.write_bytes(data)


def write_text(uri: str | Path, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str | Path) -> bytes:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_errors(uri, transfer=True):
            body: bytes = client(transfer=True).get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError as exc:
        raise StorageNotFoundError(f"{uri}: does not exist") from exc
    except IsADirectoryError as exc:
        raise StorageError(f"{uri}: is a directory, expected a file") from exc


def read_text(uri: str | Path) -> str:
    return read_bytes(uri).decode("utf-8")


def read_versioned(uri: str) -> tuple[bytes, str] | None:
    """An S3 object's content and its version (ETag), for `write_bytes_if`; None when there is none."""
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        try:
            found = client().get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return found["Body"].read(), str(found["ETag"])


def write_bytes_if(uri: str, data: bytes, version: str | None) -> bool:
    """Write an S3 object only if it is still at `version` (None: only if there is none); False, writing
    nothing, when another writer changed or removed it since."""
    bucket, key = split_s3(uri)
    condition = {"IfMatch": version} if version is not None else {"IfNoneMatch": "*"}
    with s3_errors(uri):
        try:
            client().put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as exc:
            if is_changed(exc) or (version is not None and is_missing(exc)):
                return False
            raise
    return True


def exists(uri: str | Path) -> bool:
    """True for an existing file/object, or a directory/prefix holding at least one object."""
    uri = str(uri)
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        try:
            if key and not key.endswith("/"):
                client().head_object(Bucket=bucket, Key=key)
                return True
        except Exception as exc:
            if not is_missing(exc):
                raise
        prefix = key.rstrip("/") + "/" if key else ""
        listing = client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(listing.get("KeyCount", 0))


def list_files(uri: str | Path) -> list[str]:
    """All files below a directory or prefix, as full paths/URIs, sorted."""
    uri = str(uri)
    if is_s3(uri):
        return sorted(file_sizes(uri))
    root = Path(uri)
    if not root.is_dir():
        if root.exists():
            raise StorageError(f"{uri}: is a file, expected a directory")
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not _is_temp(p.name))


def file_sizes(uri: str | Path) -> dict[str, int]:
    """Every file below a directory or prefix (full paths/URIs) with its size in bytes, from one listing."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        sizes: dict[str, int] = {}
        with s3_errors(uri):
            for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/") and not _is_temp(item["Key"]):
                        sizes[f"{S3_SCHEME}{bucket}/{item['Key']}"] = int(item["Size"])
        return sizes
    return {path: Path(path).stat().st_size for path in list_files(uri)}


def delete(uri: str | Path) -> None:
    """Delete one file or object; missing ones are ignored."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_errors(uri):
            client().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)


def remove_temporary_files(uri: str | Path) -> int:
    """Delete half-written temporary files a crashed writer left in a local directory."""
    if is_s3(uri) or not Path(uri).is_dir():
        return 0
    stale = [p for p in Path(uri).rglob(f"{_TEMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def delete_tree(uri: str | Path) -> None:
    """Delete a directory or every object below a prefix."""
    uri = str(uri)
    if not is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    for item in list_files(uri):
        delete(item)


def move_tree(source: str | Path, target: str | Path) -> None:
    """Move a directory (a rename) or every object below a prefix (copied, then deleted) to `target`."""
    source, target = str(source), str(target)
    if not is_s3(source):
        Path(source).rename(target)
        return
    for item in list_files(source):
        bucket, key = split_s3(item)
        target_bucket, target_key = split_s3(join(target, relative_to(item, source)))
        with s3_errors(item, transfer=True):
            client(transfer=True).copy_object(
                Bucket=target_bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": key}
            )
        delete(item)


def upload_file(local_path: str | Path, uri: str | Path) -> None:
    """Copy a local file to `uri` (local or S3) atomically."""
    uri = str(uri)
    if not Path(local_path).is_file():
        raise StorageNotFoundError(f"{local_path}: no such local file to upload")
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3_errors(uri, transfer=True):
            client(transfer=True).upload_file(str(local_path), bucket, key, Config=transfer_config())
        return
    with atomic_output(uri) as staged:
        shutil.copyfile(local_path, staged)


def download_file(uri: str | Path, local_path: str | Path) -> Path:
    """Copy `uri` to a local file atomically and return its path."""
    uri = str(uri)
    target = Path(local_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = _temp_sibling(target)
    try:  # no fsync, unlike atomic_output: most downloads are temporary copies (an index, a bundle)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            with s3_errors(uri, transfer=True):
                client(transfer=True).download_file(bucket, key, str(staged))
        elif not Path(uri).is_file():
            raise StorageNotFoundError(f"{uri}: does not exist")
        else:
            shutil.copyfile(uri, staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target


def upload_dir(local_dir: str | Path, uri: str | Path, last: str | None = None) -> list[str]:
    """Copy every file below `local_dir` to the same relative place below `uri`, the file `last` after the rest."""
    if not Path(local_dir).is_dir():
        raise StorageNotFoundError(f"{local_dir}: no such local directory to upload")
    names = sorted((relative_to(p, str(local_dir)) for p in list_files(local_dir)), key=lambda name: name == last)
    for name in names:
        upload_file(Path(local_dir) / name, join(str(uri), name))
    return [join(str(uri), name) for name in names]


def publish_dir(staged: Path, target: str, last: str) -> None:
    """Put the finished local directory `staged` at `target` whole, replacing what is there. Locally a copy
    is renamed into place (the old one moved aside first); on S3 the file `last` (a manifest) is deleted
    first and uploaded after the rest."""
    if is_s3(target):
        delete(join(target, last))
        upload_dir(staged, target, last)
        return
    destination = Path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    incoming, retired = _temp_sibling(destination), _temp_sibling(destination)
    shutil.copytree(staged, incoming)
    if destination.exists():
        destination.rename(retired)
    incoming.rename(destination)
    shutil.rmtree(retired, ignore_errors=True)


def local_target(local_dir: str | Path, relative: str, uri: str | Path) -> Path:
    """`local_dir / relative` for a file listed below `uri`; a key that is absolute or holds empty, `.` or `..`
    parts (S3 allows them) would land elsewhere and is refused."""
    if relative.startswith("/") or any(part in ("", ".", "..") for part in relative.split("/")):
        raise StorageError(f"{uri}: the key {relative!r} is not a plain relative path; not downloading it")
    return Path(local_dir) / relative


def download_dir(uri: str | Path, local_dir: str | Path) -> list[Path]:
    """Copy every file below `uri` to the same relative place below `local_dir`."""
    files = list_files(uri)
    if not files:
        raise StorageNotFoundError(f"{uri}: no files to download")
    targets = [local_target(local_dir, relative_to(item, str(uri)), uri) for item in files]  # all checked first
    return [download_file(item, target) for item, target in zip(files, targets, strict=True)]


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an s3:// URI if it does not exist yet."""
    bucket, _ = split_s3(uri)
    s3 = client()
    with s3_errors(f"{S3_SCHEME}{bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            if not is_missing(exc):
                raise
            s3.create_bucket(Bucket=bucket)


def pyarrow_filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path) for handing a storage root to Ray Train / Ray Data."""
    if not is_s3(uri):
        return None, os.path.abspath(uri)
    from pyarrow import fs

    endpoint, region, (access_key, secret_key, session_token, _) = current_endpoint()
    options: dict[str, Any] = {"region": region or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if access_key:
        options.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return fs.S3FileSystem(**options), uri[len(S3_SCHEME) :].rstrip("/")


@contextlib.contextmanager
def local_copy(uri: str | Path) -> Iterator[Path]:
    """Yield a local path holding the content of `uri` (the file itself when it is local)."""
    uri = str(uri)
    if not is_s3(uri):
        if not Path(uri).exists():
            raise StorageNotFoundError(f"{uri}: does not exist")
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="mmray-download-") as tmp:
        yield download_file(uri, Path(tmp) / posixpath.basename(uri.rstrip("/")))
