"""Reading and checking image files on local disk or S3."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from mmray import storage


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded."""


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode image bytes fully into an RGB PIL image; truncated or invalid files raise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: cannot decode image: {exc}") from exc


def existing_files(directory: str, names: Iterable[str]) -> set[str]:
    """The subset of `names` (paths relative to `directory`) that exist."""
    wanted = set(names)
    if storage.is_s3(directory):
        present = {storage.relative_to(uri, directory) for uri in storage.list_files(directory)}
        return wanted & present
    return {name for name in wanted if os.path.isfile(os.path.join(directory, name))}


def _decodes(uri: str) -> tuple[str, bool]:
    try:
        decode_image(storage.read_bytes(uri), uri)
    except (ImageDecodeError, storage.StorageError):
        return uri, False
    return uri, True


def check_decodable(uris: Iterable[str], threads: int = 8) -> Iterator[tuple[str, bool]]:
    """Yield (uri, decodes) for each image, reading and decoding several at once."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(_decodes, uris)
