"""What sampling, evaluation, the CLI and serving need of a text → image model, whatever its kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mmray.errors import BundleError

Noise = torch.Generator | Sequence[torch.Generator] | None
"""Where sample noise comes from: one generator for the batch, one per row (a row's noise then does not
depend on the batch it is drawn in: sharded evaluation), or the global one."""


def draw_noise(rows: int, dim: int, device: torch.device, generator: Noise) -> torch.Tensor:
    """Standard normal noise (rows, dim), drawn on the CPU (so a seed gives the same noise on any device)."""
    if isinstance(generator, Sequence):
        if len(generator) != rows:
            raise ValueError(f"{len(generator)} noise generators for {rows} rows")
        if not generator:
            return torch.empty(0, dim, device=device)
        return torch.cat([torch.randn(1, dim, generator=g) for g in generator]).to(device)  # (rows, dim)
    return torch.randn(rows, dim, generator=generator).to(device)


@runtime_checkable
class TextToImageModel(Protocol):
    image_size: int

    def condition(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption token ids and mask (B, L) → conditioning vectors (B, E)."""
        ...

    def sample(self, condition: torch.Tensor, temperature: float = 1.0, generator: Noise = None) -> torch.Tensor:
        """One image per condition row (B, E) → pixels in [0, 1] (B, 3, S, S)."""
        ...


def as_text_to_image(model: nn.Module, where: str = "the model") -> TextToImageModel:
    """`model` itself when it generates images from captions, else a clear error naming what it is."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, TextToImageModel):
        raise BundleError(f"{where} ({type(inner).__name__}) does not generate images from captions")
    return inner
