"""The dual encoder: two towers, projection heads and a learnable temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmray.models.outputs import DualEncoderOutput, EncoderOutput


def projection_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class DualEncoder(nn.Module):
    """Image and text towers mapped into one L2-normalised space; `logit_scale` = 1 / temperature. With
    `normalize_features` each tower's pooled vector is L2-normalised before its head."""

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_projection: nn.Module,
        text_projection: nn.Module,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        normalize_features: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = image_projection
        self.text_projection = text_projection
        self.embed_dim = [m for m in text_projection.modules() if isinstance(m, nn.Linear)][-1].out_features
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.logit_bias: nn.Parameter | None = None
        self.normalize_features = normalize_features

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def encode_image_features(self, images: torch.Tensor) -> EncoderOutput:
        return self.image_encoder(images)  # type: ignore[no-any-return]

    def encode_text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return self.text_encoder(ids, mask)  # type: ignore[no-any-return]

    def head_input(self, pooled: torch.Tensor) -> torch.Tensor:
        """What a projection head reads from a tower's pooled vectors (B, D): them, or them L2-normalised."""
        return F.normalize(pooled, dim=-1) if self.normalize_features else pooled

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled vector (B, D_img) in the shared space, L2-normalised. -> (B, E)"""
        return F.normalize(self.image_projection(self.head_input(pooled)).float(), dim=-1)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text tower's pooled vector (B, D_txt) in the shared space, L2-normalised. -> (B, E)"""
        return F.normalize(self.text_projection(self.head_input(pooled)).float(), dim=-1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.encode_image_features(images).pooled)  # (B, E)

    def embed_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.encode_text_features(ids, mask).pooled)  # (B, E)

    def forward(
        self,
        images: torch.Tensor | None,  # (B, 3, S, S), or None given image_features
        ids: torch.Tensor | None,  # (B, L), or None given text_features
        mask: torch.Tensor | None,  # (B, L)
        image_features: torch.Tensor | None = None,  # (B, D_img): a frozen image tower's pooled output
        text_features: torch.Tensor | None = None,  # (B, D_txt): a frozen text tower's pooled output
    ) -> DualEncoderOutput:
        if image_features is None:
            assert images is not None, "images or image_features"
            image_features = self.encode_image_features(images).pooled
        if text_features is None:
            assert ids is not None and mask is not None, "ids and mask, or text_features"
            text_features = self.encode_text_features(ids, mask).pooled
        return DualEncoderOutput(
            image_embeddings=self.project_image(image_features),
            text_embeddings=self.project_text(text_features),
            logit_scale=self.logit_scale,
            logit_bias=self.logit_bias,
        )
