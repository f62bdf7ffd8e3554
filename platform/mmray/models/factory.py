"""Building the dual encoder and its processor from a `DualEncoderConfig`; registered as `dual_encoder`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mmray.config.base import of_kind
from mmray.config.model import DualEncoderConfig, HuggingFaceConfig, ModelSection, SmallTransformerConfig
from mmray.data.processor import ImageTransform, Processor
from mmray.data.tokenizers import Tokenizer, WordTokenizer
from mmray.models.dual_encoder import DualEncoder, projection_head
from mmray.models.image_encoders import build_image_encoder
from mmray.models.registry import ModelKind, register_model
from mmray.models.text_encoders import GruEncoder, SmallTransformer
from mmray.models.weights import load_state_dict_strictly, read_state_dict

if TYPE_CHECKING:
    from mmray.models.huggingface import HuggingFaceEncoder


def _dual(config: ModelSection) -> DualEncoderConfig:
    return of_kind(config, DualEncoderConfig, "a dual_encoder")


def build_tokenizer(config: DualEncoderConfig, training_texts: Iterable[str] = ()) -> Tokenizer:
    """The text tower's tokenizer; the word-level one learns its vocabulary from `training_texts`."""
    text = config.text
    if isinstance(text, HuggingFaceConfig):
        from mmray.data.hf_tokenizer import load_hf_tokenizer

        location = text.tokenizer or text.pretrained
        if not location:
            raise ValueError("a huggingface text tower built from text.architecture needs text.tokenizer")
        return load_hf_tokenizer(location, text.max_length)
    tokenizer = WordTokenizer.build(training_texts, text.max_length)
    if tokenizer.vocab_size <= len(WordTokenizer.SPECIALS):
        raise ValueError("cannot build a word vocabulary: no training captions were given")
    return tokenizer


def build_dual_encoder_processor(config: ModelSection, training_texts: Iterable[str] = ()) -> Processor:
    dual = _dual(config)
    image = dual.image
    transform = ImageTransform(image.image_size, image.mean, image.std, image.resize, image.orientation)
    return Processor(transform, build_tokenizer(dual, training_texts))


def _text_encoder(config: DualEncoderConfig, vocab_size: int) -> SmallTransformer | GruEncoder | HuggingFaceEncoder:
    text = config.text
    if isinstance(text, HuggingFaceConfig):
        from mmray.models.huggingface import HuggingFaceEncoder

        return HuggingFaceEncoder(text)
    encoder = (
        SmallTransformer(text, vocab_size) if isinstance(text, SmallTransformerConfig) else GruEncoder(text, vocab_size)
    )
    if text.weights:
        load_state_dict_strictly(encoder, read_state_dict(text.weights), source=text.weights)
    return encoder


def build_dual_encoder(config: ModelSection, processor: Processor) -> DualEncoder:
    """A freshly initialised (or weight-loaded, per the config) dual encoder."""
    dual = _dual(config)
    image_encoder = build_image_encoder(dual.image)
    text_encoder = _text_encoder(dual, processor.tokenizer.vocab_size)
    return DualEncoder(
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        image_projection=projection_head(image_encoder.out_dim, dual.embed_dim, dual.projection),
        text_projection=projection_head(text_encoder.out_dim, dual.embed_dim, dual.projection),
        init_temperature=dual.init_temperature,
        learn_temperature=dual.learn_temperature,
        normalize_features=dual.normalize_features,
    )


def _save_extras(model: nn.Module, config: ModelSection, directory: Path) -> None:
    if isinstance(_dual(config).text, HuggingFaceConfig):
        from mmray.models.huggingface import save_architecture

        save_architecture(model, directory)


def _rebuild_config(config: ModelSection, directory: Path) -> ModelSection:
    """The config with initial weights removed (the bundle's weights replace them)."""
    dual = _dual(config)
    text = dual.text
    if isinstance(text, HuggingFaceConfig):
        from mmray.models.huggingface import saved_architecture

        text = text.model_copy(update={"pretrained": None, "architecture": saved_architecture(directory)})
    else:
        text = text.model_copy(update={"weights": None})
    image = dual.image.model_copy(update={"weights": None})
    return dual.model_copy(update={"image": image, "text": text})


DUAL_ENCODER = ModelKind(
    build=build_dual_encoder,
    build_processor=build_dual_encoder_processor,
    save_extras=_save_extras,
    rebuild_config=_rebuild_config,
    serves=("embed",),
)
register_model("dual_encoder", DUAL_ENCODER)
