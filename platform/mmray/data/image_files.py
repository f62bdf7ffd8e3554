"""Reading and checking image files on local disk or S3. The decoder (torch, torchvision) is imported where
an image is decoded, so loading a split's records without decoding needs neither."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from mmray import storage
from mmray.errors import ImageDecodeError, StorageError


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode image bytes fully into an RGB PIL image (for display); truncated or invalid files raise."""
    from torchvision.transforms.v2 import functional as tvf

    from mmray.data.images import decode_rgb

    image: Image.Image = tvf.to_pil_image(decode_rgb(data, name))
    return image


def file_sizes(directory: str, names: Iterable[str]) -> dict[str, int]:
    """The size in bytes of each of `names` (paths relative to `directory`) that exists as a file."""
    wanted = set(names)
    if storage.is_s3(directory):
        listed = storage.file_sizes(directory)
        return {name: size for uri, size in listed.items() if (name := storage.relative_to(uri, directory)) in wanted}
    paths = {name: os.path.join(directory, name) for name in wanted}
    return {name: os.path.getsize(path) for name, path in paths.items() if os.path.isfile(path)}


def _decodes(uri: str) -> tuple[str, bool]:
    from mmray.data.images import decode_rgb

    try:
        decode_rgb(storage.read_bytes(uri), uri)
    except (ImageDecodeError, StorageError):
        return uri, False
    return uri, True


def check_decodable(uris: Iterable[str], threads: int = 8) -> Iterator[tuple[str, bool]]:
    """Yield (uri, decodes) for each image, reading and decoding several at once."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(_decodes, uris)
