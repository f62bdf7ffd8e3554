"""Training-time image augmentation on uint8 batches: random resized crops and mirroring that keeps
captions true (an image whose caption names a side is never mirrored)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as tvf

from mmray.config.training import AugmentSettings

NAMES_SIDE = "names_side"
"""Caption extra: whether the caption names a side (left / right), so mirroring would make it false."""
_SIDE_WORDS = re.compile(r"\b(left|right|leftmost|rightmost|lefthand|righthand)\b", re.IGNORECASE)


def names_a_side(captions: Sequence[str]) -> torch.Tensor:
    """For each caption, whether it names a side. -> (C,) bool"""
    return torch.tensor([bool(_SIDE_WORDS.search(text)) for text in captions], dtype=torch.bool)


def _crop_box(
    size: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop with a random area share and aspect (log-uniform), as
    torchvision draws them; the whole image after 10 misses."""
    area = size * size
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        share = scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=generator))
        aspect = math.exp(log_low + (log_high - log_low) * float(torch.rand((), generator=generator)))
        width = round(math.sqrt(area * share * aspect))
        height = round(math.sqrt(area * share / aspect))
        if 0 < width <= size and 0 < height <= size:
            top = int(torch.randint(0, size - height + 1, (), generator=generator))
            left = int(torch.randint(0, size - width + 1, (), generator=generator))
            return top, left, height, width
    return 0, 0, size, size


def augment_images(
    pixels: torch.Tensor,  # (B, 3, S, S) uint8
    settings: AugmentSettings,
    generator: torch.Generator,
    names_side: torch.Tensor | None = None,  # (B,) bool: the example's caption names a side
) -> torch.Tensor:
    """A new batch with each image cropped and / or mirrored as `settings` say. -> (B, 3, S, S) uint8"""
    out = pixels.clone()
    size = pixels.shape[-1]
    if settings.crop == "random_resized":
        for row in range(pixels.shape[0]):
            top, left, height, width = _crop_box(size, settings.crop_scale, settings.crop_ratio, generator)
            out[row] = tvf.resized_crop(pixels[row], top, left, height, width, [size, size], antialias=True)
    if settings.flip == "unless_sides":
        if names_side is None:
            raise ValueError("flip=unless_sides needs to know which captions name a side")
        mirrored = (torch.rand(pixels.shape[0], generator=generator) < 0.5) & ~names_side.bool()  # (B,)
        out[mirrored] = out[mirrored].flip(-1)
    return out
