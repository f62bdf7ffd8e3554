"""Images stored more than once: the same file content under several image ids."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor

from mmray import storage
from mmray.errors import StorageError

HEAD_BYTES = 64 * 1024
"""Local files of equal size are first compared by their leading bytes, then whole where those agree."""


def _digest(uri: str, head_only: bool) -> str | None:
    """SHA-256 of a file's bytes (its first `HEAD_BYTES` with `head_only`); None when it cannot be read."""
    try:
        if storage.is_s3(uri):
            return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
        with open(uri, "rb") as file:
            digest = hashlib.sha256(file.read(HEAD_BYTES)) if head_only else hashlib.file_digest(file, "sha256")
    except (OSError, StorageError):
        return None
    return digest.hexdigest()


def _split(groups: Iterable[list[int]], key: Callable[[int], Hashable | None]) -> list[list[int]]:
    """Each group cut by `key` into the subgroups of two or more ids that share a key (None shares nothing)."""
    kept: list[list[int]] = []
    for group in groups:
        by_key: dict[Hashable, list[int]] = defaultdict(list)
        for image_id in group:
            value = key(image_id)
            if value is not None:
                by_key[value].append(image_id)
        kept.extend(ids for ids in by_key.values() if len(ids) > 1)
    return kept


def _digests(uris: Iterable[str], head_only: bool, threads: int) -> dict[str, str | None]:
    unique = sorted(set(uris))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(unique, pool.map(lambda uri: _digest(uri, head_only), unique), strict=True))


def same_content_groups(files: dict[int, tuple[str, int]], threads: int = 8) -> list[tuple[int, ...]]:
    """Groups of image ids (each ascending, groups by first id) whose files hold the same bytes, from
    `files`: image id → (URI, size in bytes). Only files that share a size with another are read."""
    groups = _split([list(files)], lambda image_id: files[image_id][1])
    uri_of = {image_id: files[image_id][0] for group in groups for image_id in group}
    if any(not storage.is_s3(uri) for uri in uri_of.values()):
        heads = _digests(uri_of.values(), head_only=True, threads=threads)
        groups = _split(groups, lambda image_id: heads[uri_of[image_id]])
    wholes = _digests((uri_of[i] for group in groups for i in group), head_only=False, threads=threads)
    groups = _split(groups, lambda image_id: wholes[uri_of[image_id]])
    return sorted(tuple(sorted(group)) for group in groups)
