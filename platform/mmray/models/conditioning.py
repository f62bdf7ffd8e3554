"""A dual encoder inside a generative model: the text tower conditions a generator, the image tower feeds a
caption decoder. The parts a model does not use are frozen (DDP needs a gradient for every trainable
parameter), and frozen towers stay in eval mode."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from mmray.config.model import DualEncoderConfig, ModelSection
from mmray.data.processor import Processor
from mmray.models.dual_encoder import DualEncoder
from mmray.models.factory import DUAL_ENCODER, build_dual_encoder, build_dual_encoder_processor
from mmray.models.freezing import FreezableTower


def freeze_tower(tower: nn.Module) -> None:
    """No gradients, and eval mode whatever `train()` is called with."""
    if isinstance(tower, FreezableTower):
        tower.freeze((), 0)
    else:
        tower.requires_grad_(False)


def text_conditioning_encoder(config: DualEncoderConfig, processor: Processor, trainable: bool) -> DualEncoder:
    """A dual encoder whose text tower and projection embed captions; the image side is frozen, and the
    text side too unless `trainable`."""
    encoder = build_dual_encoder(config, processor)
    freeze_tower(encoder.image_encoder)
    encoder.image_projection.requires_grad_(False)
    encoder.log_logit_scale.requires_grad_(False)
    if not trainable:
        freeze_tower(encoder.text_encoder)
        encoder.text_projection.requires_grad_(False)
    return encoder


def image_feature_encoder(config: DualEncoderConfig, processor: Processor, trainable: bool) -> DualEncoder:
    """A dual encoder whose image tower gives feature-map cells and a pooled vector; the text side and the
    projections are frozen, and the image tower too unless `trainable`."""
    encoder = build_dual_encoder(config, processor)
    freeze_tower(encoder.text_encoder)
    for module in (encoder.image_projection, encoder.text_projection):
        module.requires_grad_(False)
    encoder.log_logit_scale.requires_grad_(False)
    if not trainable:
        freeze_tower(encoder.image_encoder)
    return encoder


def encoder_processor(config: ModelSection, training_texts: Iterable[str]) -> Processor:
    """The processor of a model holding a dual encoder as `encoder`: that dual encoder's."""
    return build_dual_encoder_processor(config.encoder, training_texts)  # type: ignore[attr-defined]


def save_encoder_extras(model: nn.Module, config: ModelSection, directory: Path) -> None:
    DUAL_ENCODER.save_extras(model.get_submodule("encoder"), config.encoder, directory)  # type: ignore[attr-defined]


def rebuild_with_encoder(config: ModelSection, directory: Path) -> ModelSection:
    """The config with the encoder's initial weights removed (the bundle's weights replace them)."""
    encoder = DUAL_ENCODER.rebuild_config(config.encoder, directory)  # type: ignore[attr-defined]
    return config.model_copy(update={"encoder": encoder})
