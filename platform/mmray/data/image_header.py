"""An encoded image's header, read before any pixel is decoded: its format and size against the pixel limit.

Every path that decodes an image reads this first, so a few bytes claiming billions of pixels (a
decompression bomb) are refused before a decoder allocates them. Torch-free: serving's config reads the
limit from here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from mmray.errors import ConfigError, ImageDecodeError, ImageTooLargeError

warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # the limit is mmray's, below

MAX_IMAGE_PIXELS = 40_000_000
"""Default of the largest image decoded anywhere (width × height): data checks, training, indexing,
search, captioning, and serving's `limits.max_image_pixels`. MMRAY_MAX_IMAGE_PIXELS changes it."""
MAX_PIXELS_ENV = "MMRAY_MAX_IMAGE_PIXELS"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""What Pillow may open (its JPEG plugin opens cameras' MPO files too); formats whose plugins run external
programs (EPS) or are rarely images of a corpus are left out."""
READABLE = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


@dataclass(frozen=True)
class ImageHeader:
    format: str  # Pillow's name: JPEG, PNG, ...
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def max_image_pixels() -> int:
    """The pixel limit: MMRAY_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    with contextlib.suppress(ValueError):
        if (value := int(raw)) > 0:
            return value
    raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive whole number of pixels")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn), walking its markers; None when the markers do not
    lead to one (not a JPEG, or one damaged before its frame header)."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
        elif marker in _JPEG_STANDALONE:
            position += 2
        elif marker in _JPEG_SOF:
            if position + 9 > end:
                return None
            height, width = struct.unpack_from(">HH", data, position + 5)
            return width, height
        elif marker in (0xD9, 0xDA):
            return None
        else:
            (length,) = struct.unpack_from(">H", data, position + 2)
            if length < 2:
                return None
            position += 2 + length
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, which must come first; None when it does not."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _pillow_header(data: bytes, name: str, limit: str) -> ImageHeader:
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            return ImageHeader(str(image.format), width, height)
    except Image.DecompressionBombError as bomb:  # Pillow's own check, at twice its MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(bomb))
        claimed = found.group(1) if found else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}"
        raise ImageTooLargeError(f"{name}: image has {claimed} pixels; the limit is {limit}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: cannot decode image: not an image file mmray can read ({READABLE})") from None
    except Exception as exc:  # Pillow's plugins raise many kinds on hostile headers
        raise ImageDecodeError(
            f"{name}: cannot decode image: damaged or truncated header ({type(exc).__name__}: {exc})"
        ) from None


def read_header(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> ImageHeader:
    """The header of encoded image bytes, refused when empty, unreadable (ImageDecodeError) or over
    `max_pixels` (default `max_image_pixels()`; ImageTooLargeError); no pixel data is decoded."""
    if not data:
        raise ImageDecodeError(f"{name}: cannot decode image: the file is empty")
    limit = max_pixels if max_pixels is not None else max_image_pixels()
    shown = f"{limit}" if max_pixels is not None else f"{limit} ({MAX_PIXELS_ENV})"
    if size := jpeg_size(data):
        header = ImageHeader("JPEG", *size)
    elif size := png_size(data):
        header = ImageHeader("PNG", *size)  # its CRC and the rest are checked by `png_problem` before decoding
    else:
        header = _pillow_header(data, name, shown)
    if header.pixels > limit:
        raise ImageTooLargeError(
            f"{name}: image is {header.width}×{header.height} = {header.pixels} pixels; the limit is {shown}"
        )
    if header.pixels == 0:
        raise ImageDecodeError(f"{name}: cannot decode image: its header says {header.width}×{header.height}")
    return header
