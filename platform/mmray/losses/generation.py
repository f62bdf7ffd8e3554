"""Losses of the generative models: the VAE's reconstruction and KL terms, the GAN's adversarial terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Reconstruction = Literal["bce", "mse"]
AdversarialLoss = Literal["hinge", "non_saturating"]


@dataclass
class VaeTerms:
    """Per-image means over the batch, in nats (bce) or squared-error units (mse) per image."""

    reconstruction: torch.Tensor  # ()
    kl: torch.Tensor  # ()

    def loss(self, beta: float) -> torch.Tensor:
        return self.reconstruction + beta * self.kl


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) per row: (B, Z) → (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_error(logits: torch.Tensor, target: torch.Tensor, kind: Reconstruction) -> torch.Tensor:
    """Per-image bce or squared error of sigmoid(logits) vs target in [0, 1], summed: (B, 3, S, S) → (B,)."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits.float()) - target.float()).pow(2)
    return per_pixel.flatten(1).sum(dim=1)


def vae_terms(
    logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kind: Reconstruction
) -> VaeTerms:
    """logits, target: (B, 3, S, S); mu, logvar: (B, Z)."""
    return VaeTerms(
        reconstruction=reconstruction_error(logits, target, kind).mean(),
        kl=gaussian_kl(mu.float(), logvar.float()).mean(),
    )


def kl_weight(beta: float, step: int, warmup_steps: int) -> float:
    """β scaled linearly from 0 to 1 over the first `warmup_steps` optimizer steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: AdversarialLoss) -> torch.Tensor:
    """Scores of real and generated images (B,) → the discriminator's loss ()."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake: torch.Tensor, kind: AdversarialLoss) -> torch.Tensor:
    """Scores of generated images (B,) → the generator's loss ()."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()
