"""Checks on uploaded images before anything decodes them: base64, encoded size, header pixels."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from mmray.config.serving import RequestLimits
from mmray.data.images import decode_rgb
from mmray.errors import ImageDecodeError
from mmray.serving.calls import RequestError


def from_base64(value: str, field: str) -> bytes:
    """Standard base64 (a `data:` URL prefix is accepted); anything else is a 422 naming `field`."""
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("is not valid base64", field) from None


def check_image(data: bytes, field: str, limits: RequestLimits) -> tuple[int, int]:
    """Read only the header: refuse empty, oversized, unreadable or over-large (decompression bomb)
    images with a 4xx naming `field`; returns (width, height)."""
    if not data:
        raise RequestError("is empty", field)
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"is {len(data)} bytes; the limit is {limits.max_image_bytes}", field, 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise RequestError(f"has more pixels than the limit of {limits.max_image_pixels}", field, 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError("is not an image that can be decoded (JPEG, PNG, ...)", field) from None
    if width * height > limits.max_image_pixels:
        raise RequestError(
            f"is {width}×{height} = {width * height} pixels; the limit is {limits.max_image_pixels}", field, 413
        )
    return width, height


def decode_upload(data: bytes, field: str) -> torch.Tensor:
    """Fully decode a checked upload to uint8 (3, H, W); truncated or corrupt data is a 422."""
    try:
        return decode_rgb(data, field)
    except ImageDecodeError as exc:
        raise RequestError(str(exc).removeprefix(f"{field}: "), field) from None
