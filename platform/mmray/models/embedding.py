"""The interface of models that embed images and texts into one space (what indexing and search use)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mmray.errors import BundleError


@runtime_checkable
class EmbeddingModel(Protocol):
    embed_dim: int

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float images (B, 3, S, S) → L2-normalised (B, E)."""
        ...

    def embed_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask (B, L) → L2-normalised (B, E)."""
        ...


def as_embedding_model(model: nn.Module, where: str = "the model") -> EmbeddingModel:
    """`model` itself when it embeds both modalities, else a clear error naming what it is."""
    if not isinstance(model, EmbeddingModel):
        raise BundleError(f"{where} ({type(model).__name__}) does not embed images and texts into one space")
    return model
