"""Image decoding and resizing: torchvision's decoders (PIL for other formats), uint8 (3, S, S) out."""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as tvf

from mmray.errors import ImageDecodeError

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)


def _decode_with_pil(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = image.convert("RGB")
    pixels: torch.Tensor = tvf.pil_to_tensor(rgb)  # (3, H, W) uint8
    return pixels


def decode_rgb(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Fully decode image bytes to uint8 RGB (3, H, W); truncated or invalid data raise ImageDecodeError."""
    if not data:
        raise ImageDecodeError(f"{name}: cannot decode image: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (n,)
        decoded: torch.Tensor = decode_image(buffer, mode=ImageReadMode.RGB)  # (3, H, W)
        return decoded
    except RuntimeError as first:
        try:
            return _decode_with_pil(data)
        except UnidentifiedImageError:
            raise ImageDecodeError(
                f"{name}: cannot decode image: not an image file mmray can read (JPEG, PNG, WebP, GIF, or another "
                "format Pillow opens)"
            ) from first
        except (OSError, SyntaxError, ValueError):
            reason = str(first).rsplit(", ", 1)[-1]
            raise ImageDecodeError(f"{name}: cannot decode image: {reason}") from first


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
