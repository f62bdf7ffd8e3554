"""A dual encoder (`dual_encoder` or `hf_dual_encoder`) inside another model: the fusion model's towers, the
text tower conditioning a generator, the image tower feeding a caption decoder. The parts a model does not
use are frozen (DDP needs a gradient for every trainable parameter), and frozen towers stay in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from torch import nn

from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.errors import ConfigError
from mmray.losses.representation import freeze_unread_logit_parameters
from mmray.models.dual_encoder import DualEncoder
from mmray.models.freezing import FreezableTower
from mmray.models.registry import ModelKind, build_model, build_processor, model_kind

ENCODER_KINDS = ("dual_encoder", "hf_dual_encoder")
"""Model kinds whose bundles initialise a model's `encoder`."""


def build_encoder(config: ModelSection, processor: Processor) -> DualEncoder:
    """The dual encoder an `encoder` config describes, of its kind."""
    model = build_model(config, processor)
    if not isinstance(model, DualEncoder):
        raise ConfigError(f"an encoder must be a dual encoder; kind {config.kind!r} builds a {type(model).__name__}")
    return model


def freeze_tower(tower: nn.Module) -> None:
    """No gradients, and eval mode whatever `train()` is called with."""
    if isinstance(tower, FreezableTower):
        tower.freeze((), 0)
    else:
        tower.requires_grad_(False)


def conditioning_encoder(
    config: ModelSection, processor: Processor, reads: Literal["image", "text"], trainable: bool
) -> DualEncoder:
    """A dual encoder of which a model reads one side (`reads`: caption embeddings, or image features); all
    it does not read is frozen, and that side too unless `trainable`."""
    encoder = build_encoder(config, processor)
    other = "image" if reads == "text" else "text"
    freeze_tower(getattr(encoder, f"{other}_encoder"))
    frozen = [f"{other}_projection"] if reads == "text" else ["image_projection", "text_projection"]
    for name in frozen:
        encoder.get_submodule(name).requires_grad_(False)
    freeze_unread_logit_parameters(encoder, None)
    if not trainable:
        freeze_tower(getattr(encoder, f"{reads}_encoder"))
        encoder.get_submodule(f"{reads}_projection").requires_grad_(False)
    return encoder


def _encoder_processor(config: ModelSection, training_texts: Iterable[str]) -> Processor:
    """The processor of a model holding a dual encoder as `encoder`: that dual encoder's."""
    return build_processor(_encoder_config(config), training_texts)


def _save_encoder_extras(model: nn.Module, config: ModelSection, directory: Path) -> None:
    encoder = _encoder_config(config)
    model_kind(encoder.kind).save_extras(model.get_submodule("encoder"), encoder, directory)


def _rebuild_with_encoder(config: ModelSection, directory: Path) -> ModelSection:
    """The config with the encoder's initial weights removed (the bundle's weights replace them)."""
    encoder = _encoder_config(config)
    return config.model_copy(update={"encoder": model_kind(encoder.kind).rebuild_config(encoder, directory)})


def encoder_model_kind(
    build: Callable[[ModelSection, Processor], nn.Module], serves: tuple[str, ...], warm_starts: tuple[str, ...]
) -> ModelKind:
    """The `ModelKind` of a model holding a dual encoder as `encoder`: its processor is the encoder's, its
    bundle keeps the encoder's extras, and bundles of the `warm_starts` kinds initialise `encoder.`."""
    return ModelKind(
        build=build,
        build_processor=_encoder_processor,
        save_extras=_save_encoder_extras,
        rebuild_config=_rebuild_with_encoder,
        warm_starts_from=dict.fromkeys(warm_starts, "encoder."),
        serves=serves,
    )


def _encoder_config(config: ModelSection) -> ModelSection:
    encoder = getattr(config, "encoder", None)
    if not isinstance(encoder, ModelSection):
        raise TypeError(f"a {config.kind!r} config holds no encoder")
    return encoder
