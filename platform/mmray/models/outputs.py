"""Typed outputs of mmray's modules."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """A tower's pooled vector and its token / feature-map-cell features with a validity mask."""

    pooled: torch.Tensor  # (B, D)
    tokens: torch.Tensor  # (B, N, D_tok)
    mask: torch.Tensor  # (B, N) bool, True where a token is real


@dataclass
class DualEncoderOutput:
    """L2-normalised embeddings of both towers, the contrastive logit scale and (SigLIP) the logit bias."""

    image_embeddings: torch.Tensor  # (B, E)
    text_embeddings: torch.Tensor  # (B, E)
    logit_scale: torch.Tensor  # () = 1 / temperature
    logit_bias: torch.Tensor | None = None  # ()
