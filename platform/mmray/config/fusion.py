"""The fusion model config: a dual encoder's towers, a fusion of their outputs, and prediction heads."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmray.config.base import AttentionSection, Section
from mmray.config.model import DualEncoderConfig, EncoderConfig, ModelSection, model_kinds


class WeightedSumFusionConfig(Section):
    """α·z_img + (1 − α)·z_txt over the two L2-normalised embeddings; α fixed or learned in [0, 1]."""

    kind: Literal["weighted_sum"]
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="the image's weight (the initial one when learned)")
    learn_alpha: bool = False


class ConcatFusionConfig(Section):
    """[z_img; z_txt] through an MLP."""

    kind: Literal["concat"]
    hidden: int = Field(256, ge=2)
    layers: int = Field(2, ge=1, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class AttentionFusionConfig(AttentionSection):
    """Text tokens attend to the image's feature-map cells (with 2-D positions); pooled over the text."""

    kind: Literal["attention"]
    width: int = Field(128, ge=8, description="attention width; towers' token features are projected to it")
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=12, description="cross-attention layers (text self-attention, text → cells)")
    cell_layers: int = Field(
        2,
        ge=0,
        le=12,
        description="layers in which image cells attend to each other and to the text, pooled by mean and max "
        "over cells (does any / how many cells match); 0: the text side only",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class GatedFusionConfig(Section):
    """A gated multimodal unit: a learned per-dimension gate g mixes g·tanh(W_i z_img) + (1 − g)·tanh(W_t z_txt)."""

    kind: Literal["gated"]
    hidden: int = Field(256, ge=2)


class SingleModalityConfig(Section):
    """One modality's embedding alone: the baselines fusion is measured against."""

    kind: Literal["image_only", "text_only"]


FusionConfig = Annotated[
    WeightedSumFusionConfig | ConcatFusionConfig | AttentionFusionConfig | GatedFusionConfig | SingleModalityConfig,
    Field(discriminator="kind"),
]


class HeadConfig(Section):
    """One prediction head: an MLP from the fused vector to `outputs` values."""

    outputs: int | None = Field(None, ge=1, description="classes, labels or values; set from the task's head")
    hidden: int | None = Field(256, ge=2, description="hidden width; None for a linear head")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@model_kinds.register
class FusionModelConfig(ModelSection):
    """A dual encoder (its towers and projections, loadable from a retrieval bundle), a fusion of the
    two modalities and named heads on the fused vector. The heads' sizes come from the task."""

    kind: Literal["fusion"] = "fusion"
    encoder: EncoderConfig = Field(default_factory=DualEncoderConfig)
    fusion: FusionConfig = Field(default_factory=lambda: ConcatFusionConfig(kind="concat"))
    heads: dict[str, HeadConfig] = Field(
        default_factory=dict, description="filled from the task's heads; set hidden/dropout here to override"
    )
