"""A pretrained Hugging Face CLIP or SigLIP model (a local folder, `s3://` prefix or `pkg:` path) as mmray's
dual encoder, its processor as mmray's `Processor`; a bundle keeps the checkpoint's config, so it rebuilds
from the bundle alone. Registered as `hf_dual_encoder`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.model import HF_DUAL_ENCODER_TYPES, HfDualEncoderConfig, ModelSection
from mmray.data.processor import ImageTransform, Processor
from mmray.errors import ConfigError, WeightsError, json_object
from mmray.models.hf_towers import PretrainedDualEncoder
from mmray.models.registry import ModelKind, register_model
from mmray.pretrained import local_model_dir

logger = logging.getLogger(__name__)

CONFIG_DIR = "hf_dual_encoder"
"""The bundle's folder holding the checkpoint's config.json."""
FAMILY_DEFAULTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "center_crop"),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "stretch"),
}
"""mean, std and resize of each family's image processor, for folders without a preprocessor_config.json."""


def _config(config: ModelSection) -> HfDualEncoderConfig:
    return of_kind(config, HfDualEncoderConfig, "an hf_dual_encoder")


def _checked_type(hf_config: Any, where: str) -> Any:
    if hf_config.model_type not in HF_DUAL_ENCODER_TYPES:
        expected = " or ".join(HF_DUAL_ENCODER_TYPES)
        raise ConfigError(f"{where} holds a {hf_config.model_type!r} model; hf_dual_encoder takes {expected}")
    return hf_config


def hf_config_of(config: HfDualEncoderConfig) -> Any:
    """The checkpoint's `CLIPConfig` / `SiglipConfig`: read from `pretrained`, or built from `architecture`."""
    from transformers import AutoConfig

    if config.architecture is not None:
        arguments = dict(config.architecture)
        return _checked_type(AutoConfig.for_model(arguments.pop("model_type"), **arguments), "model.architecture")
    assert config.pretrained is not None
    try:
        hf_config = AutoConfig.from_pretrained(local_model_dir(config.pretrained))
    except OSError as exc:
        raise WeightsError(
            f"model.pretrained: cannot read a Hugging Face config from {config.pretrained}: {exc}"
        ) from exc
    return _checked_type(hf_config, f"model.pretrained ({config.pretrained})")


def _load_hf_model(config: HfDualEncoderConfig, hf_config: Any) -> Any:
    """The whole `CLIPModel` / `SiglipModel` in fp32: pretrained weights, or random from the architecture."""
    from transformers import CLIPModel, SiglipModel

    from mmray.models.huggingface import load_quietly

    cls: Any = CLIPModel if hf_config.model_type == "clip" else SiglipModel
    if config.architecture is not None:
        return cls._from_config(hf_config)
    assert config.pretrained is not None
    return load_quietly(
        logger, config.pretrained, cls.from_pretrained, local_model_dir(config.pretrained), dtype=torch.float32
    )


def build_hf_dual_encoder(config: ModelSection, processor: Processor) -> PretrainedDualEncoder:
    """The pair's towers, projections, logit scale and (SigLIP) bias as a `DualEncoder`."""
    pair = _config(config)
    hf_config = hf_config_of(pair)
    tokenizer, text_config = processor.tokenizer, hf_config.text_config
    if tokenizer.vocab_size > text_config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the text tower embeds {text_config.vocab_size}"
        )
    if tokenizer.max_length > text_config.max_position_embeddings:
        raise ConfigError(
            f"model.text.max_length is {tokenizer.max_length} but the text tower has "
            f"{text_config.max_position_embeddings} positions"
        )
    return PretrainedDualEncoder(_load_hf_model(pair, hf_config), pair, hf_config)


def _preprocessing_settings(saved: Path) -> dict[str, Any]:
    """A folder's `preprocessor_config.json`, its `image_mean` / `image_std` (where given) 3 numbers each."""
    try:
        settings = json_object(saved.read_text())
        for key in ("image_mean", "image_std"):
            value = settings.get(key, (0, 0, 0))
            if not (
                isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)
            ):
                raise ValueError(f"{key} is {value!r}, not 3 numbers")
    except (ValueError, TypeError) as exc:
        raise WeightsError(
            f"{saved} is damaged or not a Hugging Face image processor config ({type(exc).__name__}: {exc})"
        ) from None
    return settings


def _image_transform(pair: HfDualEncoderConfig, hf_config: Any) -> ImageTransform:
    """The checkpoint's input size, and its processor's mean / std and crop (else the family's), as overridden."""
    mean, std, resize = FAMILY_DEFAULTS[hf_config.model_type]
    if pair.pretrained is not None:
        saved = Path(local_model_dir(pair.pretrained)) / "preprocessor_config.json"
        if saved.is_file():
            settings = _preprocessing_settings(saved)
            mean = tuple(settings.get("image_mean", mean))  # type: ignore[assignment]
            std = tuple(settings.get("image_std", std))  # type: ignore[assignment]
            resize = "center_crop" if settings.get("do_center_crop") else "stretch"
    image = pair.image
    return ImageTransform(
        size=int(hf_config.vision_config.image_size),
        mean=image.mean or mean,
        std=image.std or std,
        resize=image.resize or resize,  # type: ignore[arg-type]
        orientation=image.orientation,
    )


def build_hf_processor(config: ModelSection, training_texts: Iterable[str] = ()) -> Processor:
    """The checkpoint's image preprocessing and tokenizer (`max_length`: the text tower's positions unless set)."""
    from mmray.data.hf_tokenizer import load_hf_tokenizer

    pair = _config(config)
    hf_config = hf_config_of(pair)
    location = pair.tokenizer or pair.pretrained
    if not location:
        raise ConfigError("an hf_dual_encoder built from model.architecture needs model.tokenizer")
    max_length = pair.text.max_length or int(hf_config.text_config.max_position_embeddings)
    return Processor(_image_transform(pair, hf_config), load_hf_tokenizer(location, max_length))


def _save_extras(model: nn.Module, config: ModelSection, directory: Path) -> None:
    if not isinstance(model, PretrainedDualEncoder):
        raise TypeError(f"expected a PretrainedDualEncoder, got {type(model).__name__}")
    model.hf_config.save_pretrained(directory / CONFIG_DIR)


def saved_architecture(directory: Path) -> dict[str, Any]:
    """`architecture` recreating the checkpoint's config saved in a bundle (model_type first)."""
    from transformers import AutoConfig

    values: dict[str, Any] = AutoConfig.from_pretrained(directory / CONFIG_DIR).to_dict()
    model_type = values.pop("model_type")
    for key in ("transformers_version", "architectures", "dtype", "torch_dtype"):
        values.pop(key, None)
    return {"model_type": model_type, **values}


def _rebuild_config(config: ModelSection, directory: Path) -> ModelSection:
    """The config building the architecture alone (the bundle's weights and processor replace the rest)."""
    return _config(config).model_copy(update={"pretrained": None, "architecture": saved_architecture(directory)})


HF_DUAL_ENCODER = ModelKind(
    build=build_hf_dual_encoder,
    build_processor=build_hf_processor,
    save_extras=_save_extras,
    rebuild_config=_rebuild_config,
    serves=("embed",),
)
register_model("hf_dual_encoder", HF_DUAL_ENCODER)
