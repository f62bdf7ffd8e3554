"""Safe image decoding and square resizing: uint8 RGB (3, H, W) out, or an ImageDecodeError naming the file.

The header is read first (`read_header`: format, size against the pixel limit). JPEGs, the corpora's
format, take torchvision's libjpeg-turbo decoder (which refuses damaged data with an error); every
other format is decoded by Pillow, PNGs after a check that they are whole (`png_problem`): torchvision's
PNG decoder can crash the process on a truncated file. `upright` turns an image as its EXIF orientation
tag says (phone photos are stored sideways); a missing, damaged or out-of-range tag leaves it as stored.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as tvf

from mmray.data.image_header import FORMATS, read_header
from mmray.data.png_check import png_problem
from mmray.errors import ImageDecodeError

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)
# Set once here: `catch_warnings` in decoding threads would race on the process's filters.
warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)  # the image is kept as stored
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I")  # 16-bit greyscale (a PNG's "I;16"), scaled to 8 bits


def _rgb_array(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image (first frame) as uint8 (H, W, 3); alpha dropped, 16-bit samples scaled."""
    if image.mode in _WIDE_GREY:
        grey = (np.asarray(image, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8)  # (H, W)
        return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W, 3)
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))  # (H, W, 3), writable


def turn_upright(image: Image.Image) -> None:
    """Turn a loaded image in place as its EXIF orientation tag says."""
    with contextlib.suppress(Exception):  # a damaged EXIF block: the image as stored
        ImageOps.exif_transpose(image, in_place=True)


def _decode_with_pil(data: bytes, name: str, upright: bool) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            image.load()
            if upright:
                turn_upright(image)
            pixels = _rgb_array(image)  # (H, W, 3)
    except Exception as exc:  # Pillow's plugins raise many kinds on damaged data
        reason = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"{name}: cannot decode image: {reason}") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (3, H, W)


def _decode_jpeg(data: bytes, name: str, upright: bool) -> torch.Tensor:
    try:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (n,)
        decoded: torch.Tensor = decode_image(buffer, mode=ImageReadMode.RGB, apply_exif_orientation=upright)
        return decoded  # (3, H, W)
    except RuntimeError as first:
        try:
            return _decode_with_pil(data, name, upright)  # JPEG variants libjpeg-turbo leaves out
        except ImageDecodeError:
            reason = str(first).rsplit(", ", 1)[-1]
            raise ImageDecodeError(f"{name}: cannot decode image: {reason}") from None


def decode_rgb(data: bytes, name: str = "<bytes>", max_pixels: int | None = None, upright: bool = True) -> torch.Tensor:
    """Fully decode image bytes to uint8 RGB (3, H, W), turned as their EXIF orientation says unless not
    `upright`. Empty, unreadable, truncated or damaged data raise ImageDecodeError; more pixels than
    `max_pixels` (default: the MMRAY_MAX_IMAGE_PIXELS limit) ImageTooLargeError, before anything is decoded."""
    header = read_header(data, name, max_pixels)
    if header.format in ("JPEG", "MPO"):
        return _decode_jpeg(data, name, upright)
    if header.format == "PNG" and (problem := png_problem(data)):
        raise ImageDecodeError(f"{name}: cannot decode image: {problem}")
    return _decode_with_pil(data, name, upright)


def resize_square(pixels: torch.Tensor, size: int, mode: str = "stretch") -> torch.Tensor:
    """uint8 (3, H, W) → (3, size, size), bilinear with antialiasing; no flips (captions name sides).
    `stretch`: the whole image, its aspect changed; `center_crop`: the short side resized to `size`
    (aspect kept), then the centre `size` × `size` cut out."""
    if pixels.shape[-2:] == (size, size):
        return pixels.contiguous()
    if mode == "center_crop":
        shorter: torch.Tensor = tvf.resize(pixels, size, antialias=True)  # (3, ≥S, ≥S), short side S
        return tvf.center_crop(shorter, [size, size]).contiguous()  # type: ignore[no-any-return]
    resized: torch.Tensor = tvf.resize(pixels, [size, size], antialias=True)  # (3, S, S)
    return resized.contiguous()
