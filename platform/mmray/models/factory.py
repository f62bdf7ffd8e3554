"""Building the dual encoder and its tokenizer from a `ModelConfig`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mmray.config.model import GruConfig, HuggingFaceConfig, ModelConfig, SmallTransformerConfig
from mmray.models.dual_encoder import DualEncoder, projection_head
from mmray.models.image_encoders import build_image_encoder
from mmray.models.text_encoders import GruEncoder, SmallTransformer
from mmray.models.tokenizers import HuggingFaceTokenizer, Tokenizer, WordTokenizer
from mmray.models.weights import load_state_dict_strictly, read_state_dict

if TYPE_CHECKING:
    from mmray.models.huggingface import HuggingFaceEncoder


def build_tokenizer(config: ModelConfig, training_texts: Iterable[str] = ()) -> Tokenizer:
    """The text tower's tokenizer; the word-level one learns its vocabulary from `training_texts`."""
    text = config.text
    if isinstance(text, HuggingFaceConfig):
        from mmray.models.huggingface import load_hf_tokenizer

        location = text.tokenizer or text.pretrained
        if not location:
            raise ValueError("a huggingface text tower built from text.architecture needs text.tokenizer")
        return load_hf_tokenizer(location, text.max_length)
    tokenizer = WordTokenizer.build(training_texts, text.max_length)
    if tokenizer.vocab_size <= len(WordTokenizer.SPECIALS):
        raise ValueError("cannot build a word vocabulary: no training captions were given")
    return tokenizer


def load_tokenizer(config: ModelConfig, directory: Path) -> Tokenizer:
    """The tokenizer saved beside a model's weights."""
    if isinstance(config.text, HuggingFaceConfig):
        from mmray.models.huggingface import load_hf_tokenizer

        return load_hf_tokenizer(str(directory / "hf_tokenizer"), config.text.max_length)
    return WordTokenizer.load(directory)


def _text_encoder(config: ModelConfig, tokenizer: Tokenizer) -> SmallTransformer | GruEncoder | HuggingFaceEncoder:
    text = config.text
    if isinstance(text, HuggingFaceConfig):
        from mmray.models.huggingface import HuggingFaceEncoder

        return HuggingFaceEncoder(text)
    if not isinstance(tokenizer, WordTokenizer | HuggingFaceTokenizer):
        raise TypeError(f"unsupported tokenizer {type(tokenizer).__name__}")
    encoder: SmallTransformer | GruEncoder
    if isinstance(text, SmallTransformerConfig):
        encoder = SmallTransformer(text, tokenizer.vocab_size)
    elif isinstance(text, GruConfig):
        encoder = GruEncoder(text, tokenizer.vocab_size)
    if text.weights:
        load_state_dict_strictly(encoder, read_state_dict(text.weights), source=text.weights)
    return encoder


def build_model(config: ModelConfig, tokenizer: Tokenizer) -> DualEncoder:
    """A freshly initialised (or weight-loaded, per the config) dual encoder."""
    image_encoder = build_image_encoder(config.image)
    text_encoder = _text_encoder(config, tokenizer)
    return DualEncoder(
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        image_projection=projection_head(image_encoder.out_dim, config.embed_dim, config.projection),
        text_projection=projection_head(text_encoder.out_dim, config.embed_dim, config.projection),
        init_temperature=config.init_temperature,
        learn_temperature=config.learn_temperature,
    )
