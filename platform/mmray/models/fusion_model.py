"""The fusion model (kind `fusion`): a dual encoder, a fusion of its two towers and named prediction heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.fusion import FusionModelConfig, HeadConfig
from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.errors import ConfigError
from mmray.models.conditioning import ENCODER_KINDS, build_encoder, encoder_model_kind
from mmray.models.dual_encoder import DualEncoder
from mmray.models.fusion import Fusion, FusionDims, Modality, build_fusion, mlp
from mmray.models.outputs import DualEncoderOutput
from mmray.models.registry import register_model


@dataclass
class FusionOutput:
    """Each head's raw outputs, the fused vector, and (both modalities given) the encoder's embeddings."""

    predictions: dict[str, torch.Tensor]  # name -> (B, outputs)
    fused: torch.Tensor  # (B, F)
    embeddings: DualEncoderOutput | None


def head(in_dim: int, config: HeadConfig) -> nn.Module:
    """LayerNorm (fused vectors come at any scale, e.g. unit-length sums), then a linear layer or an MLP."""
    if config.outputs is None:
        raise ConfigError("a fusion model head needs `outputs`; the predict task sets it from its heads")
    norm = nn.LayerNorm(in_dim)
    if config.hidden is None:
        return nn.Sequential(norm, nn.Linear(in_dim, config.outputs))
    return nn.Sequential(norm, *mlp(in_dim, config.hidden, 1, config.dropout), nn.Linear(config.hidden, config.outputs))


class FusionModel(nn.Module):
    """`encoder` is a complete dual encoder (so a retrieval bundle's weights load into it); the fusion
    reads its embeddings (and token features where it attends); heads read the fused vector."""

    def __init__(self, encoder: DualEncoder, fusion: Fusion, heads: dict[str, HeadConfig]) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = fusion
        self.heads = nn.ModuleDict({name: head(fusion.out_dim, config) for name, config in heads.items()})

    def forward(
        self, images: torch.Tensor | None, ids: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> FusionOutput:
        """images: (B, 3, S, S) normalised, ids/mask: (B, L); either may be None; unread ones are not encoded."""
        image = text = None
        if images is not None and "image" in self.fusion.modalities:
            features = self.encoder.encode_image_features(images)
            image = Modality(self.encoder.project_image(features.pooled), features.tokens, features.mask)
        if ids is not None and mask is not None and "text" in self.fusion.modalities:
            features = self.encoder.encode_text_features(ids, mask)
            text = Modality(self.encoder.project_text(features.pooled), features.tokens, features.mask)
        fused = self.fusion(image, text)  # (B, F)
        embeddings = None
        if image is not None and text is not None:
            embeddings = DualEncoderOutput(
                image.embedding, text.embedding, self.encoder.logit_scale, self.encoder.logit_bias
            )
        return FusionOutput({name: module(fused) for name, module in self.heads.items()}, fused, embeddings)


def build_fusion_model(config: ModelSection, processor: Processor) -> FusionModel:
    """A fusion model; towers the fusion does not read are frozen (DDP needs gradients for all trainable ones)."""
    fusion_config = of_kind(config, FusionModelConfig, "a fusion")
    encoder = build_encoder(fusion_config.encoder, processor)
    dims = FusionDims(
        embed_dim=encoder.embed_dim,
        image_token_dim=int(encoder.image_encoder.out_dim),  # type: ignore[arg-type]
        text_token_dim=int(encoder.text_encoder.out_dim),  # type: ignore[arg-type]
    )
    fusion = build_fusion(fusion_config.fusion, dims)
    for name, tower in (("image", encoder.image_encoder), ("text", encoder.text_encoder)):
        if name not in fusion.modalities:
            tower.requires_grad_(False)
            getattr(encoder, f"{name}_projection").requires_grad_(False)
    return FusionModel(encoder, fusion, fusion_config.heads)


register_model("fusion", encoder_model_kind(build_fusion_model, ("classify",), ENCODER_KINDS))
