"""Embedding a whole split held in memory, sharded across the ranks of a group (or on one process)."""

from __future__ import annotations

import torch
from torch import nn

from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES, SplitTensors
from mmray.distributed import gather_rows, shard_range
from mmray.models.embedding import as_embedding_model
from mmray.tasks.base import EvalContext, eval_mode


@torch.no_grad()
def embed_split(model: nn.Module, split: SplitTensors, context: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 embeddings of all images (N, E) and captions (C, E), returned on CPU. Each rank embeds
    its shard on its device; shards are gathered there (NCCL gathers only device tensors)."""
    embedder = as_embedding_model(model)
    with eval_mode(model):
        image_features, text_features = split.image_extras.get(IMAGE_FEATURES), split.caption_extras.get(TEXT_FEATURES)
        images, texts = [], []
        rows = shard_range(split.num_images, context.rank, context.world)
        for start in range(rows.start, rows.stop, context.batch_size):
            stop = min(start + context.batch_size, rows.stop)
            if image_features is not None:  # a frozen tower's features, computed once
                images.append(model.project_image(image_features[start:stop].to(context.device)))  # type: ignore[operator]
            else:
                pixels = context.normalized_images(split.images[start:stop])  # (b, 3, S, S)
                images.append(embedder.embed_images(pixels).float())  # (b, E)
        rows = shard_range(split.num_captions, context.rank, context.world)
        for start in range(rows.start, rows.stop, context.batch_size):
            stop = min(start + context.batch_size, rows.stop)
            if text_features is not None:
                texts.append(model.project_text(text_features[start:stop].to(context.device)))  # type: ignore[operator]
                continue
            ids = split.caption_ids[start:stop].to(context.device)  # (b, L)
            mask = split.caption_mask[start:stop].to(context.device)  # (b, L)
            texts.append(embedder.embed_texts(ids, mask).float())  # (b, E)
    empty = torch.zeros(0, embedder.embed_dim, device=context.device)
    local_images = torch.cat(images) if images else empty  # (n_r, E)
    local_texts = torch.cat(texts) if texts else empty  # (c_r, E)
    return (
        gather_rows(local_images, split.num_images, context.world).cpu(),
        gather_rows(local_texts, split.num_captions, context.world).cpu(),
    )
