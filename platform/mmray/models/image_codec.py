"""Convolutional image decoders (vector → image) and encoders (image → vector) for the generative models:
DCGAN-style stacks that double (or halve) the side at every stage between 4×4 and the image size."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def stage_channels(image_size: int, width: int, max_channels: int = 512) -> list[int]:
    """Channels at sides 4, 8, ..., image_size / 2: `width` at the largest side, doubled at each halving."""
    stages = int(math.log2(image_size)) - 2
    if 2 ** (stages + 2) != image_size or stages < 1:
        raise ValueError(f"generative models need an image size that is a power of two ≥ 8, got {image_size}")
    return [min(max_channels, width * 2 ** (stages - 1 - i)) for i in range(stages)]


class ConditionalBatchNorm(nn.Module):
    """Batch norm without its own affine parameters, scaled and shifted per sample by a linear map of a
    condition vector: BN(x) · (1 + γ(c)) + β(c) (de Vries et al., 2017; as in BigGAN's generator)."""

    def __init__(self, channels: int, condition_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.affine = nn.Linear(condition_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """features (B, C, H, W), condition (B, D) → (B, C, H, W)."""
        scale, shift = self.affine(condition.to(features.dtype)).chunk(2, dim=1)  # (B, C) each
        return self.norm(features) * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]  # type: ignore[no-any-return]


class DecoderStage(nn.Module):
    """×2 nearest-neighbour upsampling, then twice a 3×3 convolution, conditional batch norm and ReLU."""

    def __init__(self, c_in: int, c_out: int, condition_dim: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = ConditionalBatchNorm(c_out, condition_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = ConditionalBatchNorm(c_out, condition_dim)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W), (B, D) → (B, C_out, 2H, 2W)."""
        features = torch.relu(self.norm1(self.conv1(self.upsample(features)), condition))
        return torch.relu(self.norm2(self.conv2(features), condition))


class ImageDecoder(nn.Module):
    """A vector (B, D) and a condition (B, E) → image logits (B, 3, S, S); the condition modulates every stage."""

    def __init__(self, in_dim: int, condition_dim: int, image_size: int, width: int) -> None:
        super().__init__()
        channels = stage_channels(image_size, width)
        self.start_channels = channels[0]
        self.project = nn.Sequential(nn.Linear(in_dim + condition_dim, channels[0] * 16), nn.ReLU())
        self.stages = nn.ModuleList(
            DecoderStage(c_in, c_out, condition_dim)
            for c_in, c_out in zip(channels, [*channels[1:], width], strict=True)
        )
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, vector: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        condition = condition.to(vector.dtype)
        start = self.project(torch.cat([vector, condition], dim=1))
        features = start.view(vector.shape[0], self.start_channels, 4, 4)  # (B, C0, 4, 4)
        for stage in self.stages:
            features = stage(features, condition)
        return self.to_rgb(features)  # type: ignore[no-any-return]  # (B, 3, S, S) logits


class ImageCodeEncoder(nn.Module):
    """An image (B, 3, S, S) → a vector (B, out_dim); `spectral`: spectral norm, no batch norm (a discriminator)."""

    def __init__(self, image_size: int, width: int, spectral: bool = False) -> None:
        super().__init__()
        channels = list(reversed(stage_channels(image_size, width)))  # sides S/2 ... 4
        wrap = spectral_norm if spectral else (lambda module: module)
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            layers.append(wrap(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=spectral or i == 0)))
            if not spectral and i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_dim = channels[-1] * 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).flatten(1)  # type: ignore[no-any-return]  # (B, C·16)
