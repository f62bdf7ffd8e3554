"""The conditional GAN (text → image), model kind `conditional_gan`: a DCGAN-style generator and a spectrally
normalised projection discriminator (Miyato & Koyama, 2018), both conditioned on a caption embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from mmray.config.base import of_kind
from mmray.config.generation import ConditionalGanConfig
from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.models.conditioning import conditioning_encoder, encoder_model_kind
from mmray.models.dual_encoder import DualEncoder
from mmray.models.image_codec import ImageCodeEncoder, ImageDecoder
from mmray.models.registry import register_model
from mmray.models.text_to_image import Noise, draw_noise

GanStep = Literal["discriminator", "generator"]


@dataclass
class GanScores:
    """Discriminator scores of the step's real (discriminator step only) and generated images."""

    real: torch.Tensor | None  # (B,)
    fake: torch.Tensor  # (B,)


class ProjectionDiscriminator(nn.Module):
    """score(x, c) = w·h(x) + ⟨V c, h(x)⟩ over image features h (B, F) and condition c (B, E)."""

    def __init__(self, image_size: int, width: int, condition_dim: int, spectral: bool) -> None:
        super().__init__()
        self.features = ImageCodeEncoder(image_size, width, spectral=spectral)
        wrap = spectral_norm if spectral else (lambda module: module)
        self.score = wrap(nn.Linear(self.features.out_dim, 1))
        self.embed = wrap(nn.Linear(condition_dim, self.features.out_dim, bias=False))

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """images in [-1, 1] (B, 3, S, S), condition (B, E) → scores (B,)."""
        features = self.features(images)  # (B, F)
        projected = (self.embed(condition.to(features.dtype)) * features).sum(dim=1)  # (B,)
        return self.score(features).squeeze(1) + projected  # type: ignore[no-any-return]


class ConditionalGan(nn.Module):
    """`encoder` embeds captions; `generator` maps [noise; condition] to an image; `discriminator` scores
    (image, condition) pairs. `forward(step, ...)` is one step's scores, so DDP wraps the whole model."""

    def __init__(
        self, encoder: DualEncoder, image_size: int, noise_dim: int, width: int, spectral: bool = True
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size
        self.noise_dim = noise_dim
        self.generator = ImageDecoder(noise_dim, encoder.embed_dim, image_size, width)
        self.discriminator = ProjectionDiscriminator(image_size, width, encoder.embed_dim, spectral)

    def condition(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption token ids and mask (B, L) → the L2-normalised caption embedding (B, E)."""
        return self.encoder.embed_texts(ids, mask)

    def generate(self, noise: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, N), (B, E) → images in [0, 1] (B, 3, S, S)."""
        return torch.sigmoid(self.generator(noise, condition).float())

    def forward(
        self, step: GanStep, real: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor
    ) -> GanScores:
        """real: images in [0, 1] (B, 3, S, S); ids, mask: (B, L); noise: (B, N)."""
        if step == "discriminator":
            with torch.no_grad():
                condition = self.condition(ids, mask)
                fake = self.generate(noise, condition)
            scores = self.discriminator(torch.cat([real, fake]) * 2.0 - 1.0, torch.cat([condition, condition]))
            return GanScores(*scores.chunk(2))  # real, fake
        condition = self.condition(ids, mask)
        fake = self.generate(noise, condition)
        # the discriminator's parameters leave this graph: no gradients for them, and DDP sees them as unused
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        self.discriminator.requires_grad_(False)
        try:
            return GanScores(None, self.discriminator(fake * 2.0 - 1.0, condition.detach()))
        finally:
            for parameter, flag in zip(self.discriminator.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, temperature: float = 1.0, generator: Noise = None) -> torch.Tensor:
        """One image per condition row (B, E), noise scaled by `temperature` → [0, 1] (B, 3, S, S)."""
        noise = draw_noise(condition.shape[0], self.noise_dim, condition.device, generator) * temperature
        return self.generate(noise, condition)


def build_conditional_gan(config: ModelSection, processor: Processor) -> ConditionalGan:
    gan = of_kind(config, ConditionalGanConfig, "a conditional_gan")
    encoder = conditioning_encoder(gan.encoder, processor, "text", gan.train_condition)
    return ConditionalGan(encoder, gan.encoder.image.image_size, gan.noise_dim, gan.width, gan.spectral_norm)


register_model("conditional_gan", encoder_model_kind(build_conditional_gan, ("generate",), ("dual_encoder",)))
