"""The conditional VAE (text → image): q(z | image, caption), p(image | z, caption), a N(0, I) prior;
registered as model kind `conditional_vae`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.generation import ConditionalVaeConfig
from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.models.conditioning import conditioning_encoder, encoder_model_kind
from mmray.models.dual_encoder import DualEncoder
from mmray.models.image_codec import ImageCodeEncoder, ImageDecoder
from mmray.models.registry import register_model
from mmray.models.text_to_image import Noise, draw_noise


@dataclass
class VaeOutput:
    logits: torch.Tensor  # (B, 3, S, S) pixel logits
    mu: torch.Tensor  # (B, Z)
    logvar: torch.Tensor  # (B, Z)


class ConditionalVae(nn.Module):
    """`encoder` (a dual encoder) embeds the caption that conditions both the posterior and the decoder."""

    def __init__(self, encoder: DualEncoder, image_size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size
        self.latent_dim = latent_dim
        condition_dim = encoder.embed_dim
        self.posterior_features = ImageCodeEncoder(image_size, width)
        self.posterior = nn.Linear(self.posterior_features.out_dim + condition_dim, 2 * latent_dim)
        self.decoder = ImageDecoder(latent_dim, condition_dim, image_size, width)

    def condition(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption token ids and mask (B, L) → the L2-normalised caption embedding (B, E)."""
        return self.encoder.embed_texts(ids, mask)

    def encode(self, images: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, S, S) and conditions (B, E) → posterior mean and log-variance (B, Z)."""
        features = self.posterior_features(images)  # (B, F)
        mu, logvar = self.posterior(torch.cat([features, condition.to(features.dtype)], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, latent: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, Z), (B, E) → pixel logits (B, 3, S, S)."""
        return self.decoder(latent, condition)  # type: ignore[no-any-return]

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> VaeOutput:
        """Reparameterised reconstruction of normalised images (B, 3, S, S) given their captions (B, L)."""
        condition = self.condition(ids, mask)
        mu, logvar = self.encode(images, condition)
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return VaeOutput(self.decode(latent, condition), mu, logvar)

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, temperature: float = 1.0, generator: Noise = None) -> torch.Tensor:
        """One image per condition row (B, E) from the prior scaled by `temperature` → [0, 1] (B, 3, S, S)."""
        latent = draw_noise(condition.shape[0], self.latent_dim, condition.device, generator) * temperature
        return torch.sigmoid(self.decode(latent, condition).float())


def build_conditional_vae(config: ModelSection, processor: Processor) -> ConditionalVae:
    vae = of_kind(config, ConditionalVaeConfig, "a conditional_vae")
    encoder = conditioning_encoder(vae.encoder, processor, "text", vae.train_condition)
    return ConditionalVae(encoder, vae.encoder.image.image_size, vae.latent_dim, vae.width)


register_model("conditional_vae", encoder_model_kind(build_conditional_vae, ("generate",), ("dual_encoder",)))
