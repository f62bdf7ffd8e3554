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
    """Image and text towers mapped into one L2-normalised space; `logit_scale` = 1 / temperature."""

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_projection: nn.Module,
        text_projection: nn.Module,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = image_projection
        self.text_projection = text_projection
        self.embed_dim = [m for m in text_projection.modules() if isinstance(m, nn.Linear)][-1].out_features
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    def encode_image_features(self, images: torch.Tensor) -> EncoderOutput:
        return self.image_encoder(images)  # type: ignore[no-any-return]

    def encode_text_features(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        return self.text_encoder(ids, mask)  # type: ignore[no-any-return]

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled vector (B, D_img) in the shared space, L2-normalised. -> (B, E)"""
        return F.normalize(self.image_projection(pooled).float(), dim=-1)

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text tower's pooled vector (B, D_txt) in the shared space, L2-normalised. -> (B, E)"""
        return F.normalize(self.text_projection(pooled).float(), dim=-1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.encode_image_features(images).pooled)  # (B, E)

    def embed_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project_text(self.encode_text_features(ids, mask).pooled)  # (B, E)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> DualEncoderOutput:
        return DualEncoderOutput(
            image_embeddings=self.embed_images(images),
            text_embeddings=self.embed_texts(ids, mask),
            logit_scale=self.logit_scale,
        )
