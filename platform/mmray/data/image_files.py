"""Reading and checking image files on local disk or S3."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from mmray import storage
from mmray.data.images import decode_rgb
from mmray.errors import ImageDecodeError, StorageError


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode image bytes fully into an RGB PIL image (for display); truncated or invalid files raise."""
    image: Image.Image = tvf.to_pil_image(decode_rgb(data, name))
    return image


def existing_files(directory: str, names: Iterable[str]) -> set[str]:
    """The subset of `names` (paths relative to `directory`) that exist."""
    wanted = set(names)
    if storage.is_s3(directory):
        present = {storage.relative_to(uri, directory) for uri in storage.list_files(directory)}
        return wanted & present
    return {name for name in wanted if os.path.isfile(os.path.join(directory, name))}


def _decodes(uri: str) -> tuple[str, bool]:
    try:
        decode_rgb(storage.read_bytes(uri), uri)
    except (ImageDecodeError, StorageError):
        return uri, False
    return uri, True


def check_decodable(uris: Iterable[str], threads: int = 8) -> Iterator[tuple[str, bool]]:
    """Yield (uri, decodes) for each image, reading and decoding several at once."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(_decodes, uris)
