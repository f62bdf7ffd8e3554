"""Tiny randomly initialised CLIP and SigLIP folders, as `save_pretrained` writes them (config, weights,
tokenizer, preprocessor_config.json), built offline: a byte-level BPE without merges for CLIP, a word-level
tokenizer ending each text with `</s>` for SigLIP."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

IMAGE_SIZE = 32
POSITIONS = 160
"""Text positions: a shapes caption has up to 150 characters, one CLIP token each here."""
WORDS = [
    "a",
    "an",
    "and",
    "at",
    "big",
    "blue",
    "bottom",
    "centre",
    "circle",
    "corner",
    "cyan",
    "diamond",
    "green",
    "image",
    "in",
    "is",
    "large",
    "left",
    "little",
    "middle",
    "of",
    "on",
    "one",
    "photo",
    "purple",
    "red",
    "right",
    "shape",
    "shapes",
    "showing",
    "small",
    "square",
    "the",
    "there",
    "three",
    "top",
    "triangle",
    "two",
    "yellow",
]
TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def _clip_tokenizer() -> CLIPTokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0}
    for token in [*alphabet, *(f"{c}</w>" for c in alphabet)]:
        vocab[token] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A 2-block CLIP (32 px images, 8 px patches) with its tokenizer and image processor in `folder`."""
    tokenizer = _clip_tokenizer()
    eos = tokenizer.eos_token_id
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": POSITIONS}
    text |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos, "pad_token_id": eos}
    vision = {**TOWER, "image_size": IMAGE_SIZE, "patch_size": 8}
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    size = {"shortest_edge": IMAGE_SIZE}
    CLIPImageProcessor(size=size, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def _siglip_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="</s>", unk_token="<unk>")


def write_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """A 2-block SigLIP (32 px images) whose logit scale and bias are not the initial zeros."""
    tokenizer = _siglip_tokenizer()
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 48}
    text |= {"bos_token_id": 2, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {**TOWER, "image_size": IMAGE_SIZE, "patch_size": 8}
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder
