"""Checks on uploaded images before anything decodes them (base64, encoded size, header pixels), and their
safe decoding in the model replicas: a damaged upload is a 422, a too large one a 413, never a crash."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from mmray.config.serving import RequestLimits
from mmray.data.image_header import read_header
from mmray.errors import ImageDecodeError, ImageTooLargeError
from mmray.serving.calls import RequestError

if TYPE_CHECKING:
    import torch


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
        header = read_header(data, field, limits.max_image_pixels)
    except ImageTooLargeError as exc:
        raise RequestError(str(exc).removeprefix(f"{field}: image "), field, 413) from None
    except ImageDecodeError:
        raise RequestError("is not an image that can be decoded (JPEG, PNG, ...)", field) from None
    return header.width, header.height


def decode_upload(data: bytes, field: str, max_pixels: int | None = None, upright: bool = True) -> torch.Tensor:
    """Fully decode an upload to uint8 (3, H, W), turned by its EXIF orientation unless not `upright`, its
    header checked again against `max_pixels` (default: the MMRAY_MAX_IMAGE_PIXELS limit): too large is a 413,
    truncated or damaged data a 422. Only model replicas decode: the HTTP ingress, which checks headers alone,
    imports this module without torch."""
    from mmray.data.images import decode_rgb

    try:
        return decode_rgb(data, field, max_pixels, upright)
    except ImageTooLargeError as exc:
        raise RequestError(str(exc).removeprefix(f"{field}: image "), field, 413) from None
    except ImageDecodeError as exc:
        raise RequestError(str(exc).removeprefix(f"{field}: "), field) from None
