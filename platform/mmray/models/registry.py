"""The model registry: how each `model.kind` builds its model and processor and is rebuilt from a bundle."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from mmray.config.model import ModelSection
from mmray.data.processor import Processor
from mmray.errors import ConfigError

BUILTIN_MODULES = (
    "mmray.models.factory",
    "mmray.models.hf_dual_encoder",
    "mmray.models.fusion_model",
    "mmray.models.conditional_vae",
    "mmray.models.conditional_gan",
    "mmray.models.caption_decoder",
)


@dataclass(frozen=True)
class ModelKind:
    """What mmray needs to know of one kind of model:
    - `build`: a fresh model (initial weights loaded as the config names them) for a processor;
    - `build_processor`: the processor, learning a word vocabulary from training texts where needed;
    - `save_extras` / `rebuild_config`: what a bundle stores beside the weights, and the config that
      rebuilds the architecture from it without reading any initial weights;
    - `warm_starts_from`: other kinds whose bundles initialise a sub-module (kind → parameter prefix),
      e.g. a fusion model's `encoder.` from a dual-encoder bundle;
    - `serves`: the endpoint groups a served bundle of this kind answers (embed, classify, ...)."""

    build: Callable[[ModelSection, Processor], nn.Module]
    build_processor: Callable[[ModelSection, Iterable[str]], Processor]
    save_extras: Callable[[nn.Module, ModelSection, Path], None]
    rebuild_config: Callable[[ModelSection, Path], ModelSection]
    warm_starts_from: dict[str, str] = field(default_factory=dict)
    serves: tuple[str, ...] = ()


_KINDS: dict[str, ModelKind] = {}


def register_model(kind: str, entry: ModelKind) -> None:
    _KINDS[kind] = entry


def model_kind(kind: str) -> ModelKind:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    if kind not in _KINDS:
        raise ConfigError(f"no model of kind {kind!r} is registered; kinds: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind]


def build_model(config: ModelSection, processor: Processor) -> nn.Module:
    """A freshly initialised (or initial-weight-loaded, per the config) model of `config.kind`."""
    return model_kind(config.kind).build(config, processor)


def build_processor(config: ModelSection, training_texts: Iterable[str] = ()) -> Processor:
    """The processor of a new model of `config.kind`."""
    return model_kind(config.kind).build_processor(config, training_texts)
