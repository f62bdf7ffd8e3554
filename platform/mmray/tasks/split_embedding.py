"""Embedding a whole split held in memory, sharded across the ranks of a group (or on one process)."""

from __future__ import annotations

import torch
from torch import nn

from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES, SplitTensors
from mmray.models.embedding import as_embedding_model
from mmray.tasks.base import EvalContext, eval_mode


@torch.no_grad()
def embed_split(model: nn.Module, split: SplitTensors, context: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 embeddings of all images (N, E) and captions (C, E), returned on CPU. Each rank embeds
    its shard on its device; shards are gathered there (NCCL gathers only device tensors)."""
    embedder = as_embedding_model(model)
    image_features, text_features = split.image_extras.get(IMAGE_FEATURES), split.caption_extras.get(TEXT_FEATURES)

    def images(start: int, stop: int) -> torch.Tensor:
        if image_features is not None:  # a frozen tower's features, computed once
            return model.project_image(image_features[start:stop].to(context.device))  # type: ignore[operator,no-any-return]
        return embedder.embed_images(context.normalized_images(split.images[start:stop]))  # (b, E)

    def texts(start: int, stop: int) -> torch.Tensor:
        if text_features is not None:
            return model.project_text(text_features[start:stop].to(context.device))  # type: ignore[operator,no-any-return]
        ids = split.caption_ids[start:stop].to(context.device)  # (b, L)
        return embedder.embed_texts(ids, split.caption_mask[start:stop].to(context.device))  # (b, E)

    with eval_mode(model):
        return context.rows(images, split.num_images), context.rows(texts, split.num_captions)
