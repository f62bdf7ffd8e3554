"""Hugging Face `AutoModel` text encoders and tokenizers, from a folder, s3://, the hub or a config."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from mmray import storage
from mmray.config.model import HuggingFaceConfig
from mmray.models.freezing import freeze_all_but_last
from mmray.models.outputs import EncoderOutput
from mmray.models.text_encoders import pool_tokens
from mmray.models.tokenizers import HuggingFaceTokenizer

CACHE_DIR = Path(os.environ.get("MMRAY_CACHE", Path.home() / ".cache" / "mmray"))


def local_model_dir(location: str) -> str:
    """A local folder for `location`: itself, a cached download of an s3:// prefix, or a hub name."""
    if not storage.is_s3(location):
        return location
    target = CACHE_DIR / "hf" / hashlib.sha256(location.encode()).hexdigest()[:16]
    if not (target / "config.json").is_file() and not (target / "tokenizer_config.json").is_file():
        storage.download_dir(location, target)
    return str(target)


def _encoder_blocks(model: nn.Module) -> list[nn.Module]:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__} to freeze")
    return list(layers)


class HuggingFaceEncoder(nn.Module):
    """An `AutoModel` whose last hidden states are the tokens, pooled by CLS or masked mean."""

    def __init__(self, config: HuggingFaceConfig) -> None:
        super().__init__()
        self.pooling = config.pooling
        if config.pretrained:
            self.model = AutoModel.from_pretrained(local_model_dir(config.pretrained))
        elif config.architecture:
            arguments = dict(config.architecture)
            model_type = arguments.pop("model_type", None)
            if not model_type:
                raise ValueError("text.architecture needs a model_type, e.g. bert")
            self.model = AutoModel.from_config(  # type: ignore[no-untyped-call]
                AutoConfig.for_model(model_type, **arguments)
            )
        else:
            raise ValueError("a huggingface text tower needs text.pretrained or text.architecture")
        self.out_dim = int(self.model.config.hidden_size)
        if config.trainable_blocks is not None:
            freeze_all_but_last(self.model, _encoder_blocks(self.model), config.trainable_blocks)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:  # ids, mask: (B, L)
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        return EncoderOutput(pooled=pool_tokens(hidden, mask, self.pooling), tokens=hidden, mask=mask)


ARCHITECTURE_DIR = "hf_architecture"


def save_architecture(model: nn.Module, directory: Path) -> None:
    """Save the Hugging Face config of the model's text tower, so it can be rebuilt without weights."""
    encoder = getattr(model, "text_encoder", model)
    if not isinstance(encoder, HuggingFaceEncoder):
        raise TypeError(f"expected a HuggingFaceEncoder text tower, got {type(encoder).__name__}")
    encoder.model.config.save_pretrained(directory / ARCHITECTURE_DIR)


def saved_architecture(directory: Path) -> dict[str, Any]:
    """`architecture` kwargs (model_type first) recreating a saved text tower config."""
    config = AutoConfig.from_pretrained(directory / ARCHITECTURE_DIR)
    values = config.to_diff_dict()
    values.pop("transformers_version", None)
    values.pop("architectures", None)
    return {"model_type": config.model_type, **values}


def load_hf_tokenizer(location: str, max_length: int) -> HuggingFaceTokenizer:
    tokenizer: Any = AutoTokenizer.from_pretrained(local_model_dir(location))
    return HuggingFaceTokenizer(tokenizer, max_length)
