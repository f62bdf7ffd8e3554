"""Hugging Face `AutoModel` text encoders, from a folder, s3://, the hub or a config."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.utils import logging as hf_logging

from mmray.config.model import HuggingFaceConfig
from mmray.models.hf_towers import HfTower
from mmray.models.outputs import EncoderOutput
from mmray.models.text_encoders import pool_tokens
from mmray.pretrained import local_model_dir

logger = logging.getLogger(__name__)


def load_quietly(log: logging.Logger, source: str, load: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`load(*args, **kwargs)`, a `from_pretrained`, without transformers' progress bar and load report, whose one
    finding that matters, weights the checkpoint at `source` lacks (which start random), is warned of through `log`."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model, loading_info = load(*args, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    missing = sorted(loading_info.get("missing_keys", ()))
    if missing:
        log.warning(
            "%s lacks %d of the model's weights, which start random: %s%s",
            source, len(missing), ", ".join(missing[:8]), ", ..." if len(missing) > 8 else "",
        )  # fmt: skip
    return model


def _without_pooler(load: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`load(...)` without the unused pooler where the architecture has one (an untrained pooler breaks DDP)."""
    try:
        return load(*args, add_pooling_layer=False, **kwargs)
    except TypeError:
        return load(*args, **kwargs)


class HuggingFaceEncoder(HfTower):
    """An `AutoModel` whose last hidden states are the tokens, pooled by CLS or masked mean."""

    def __init__(self, config: HuggingFaceConfig) -> None:
        if config.pretrained:
            folder = local_model_dir(config.pretrained)
            model = load_quietly(logger, folder, _without_pooler, AutoModel.from_pretrained, folder)
        elif config.architecture:
            arguments = dict(config.architecture)
            model_type = arguments.pop("model_type", None)
            if not model_type:
                raise ValueError("text.architecture needs a model_type, e.g. bert")
            model = _without_pooler(AutoModel.from_config, AutoConfig.for_model(model_type, **arguments))
        else:
            raise ValueError("a huggingface text tower needs text.pretrained or text.architecture")
        super().__init__(model, config.trainable_blocks)
        self.pooling = config.pooling

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
