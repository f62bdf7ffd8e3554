"""Embedding a split and computing retrieval metrics, sharded across the ranks of a run."""

from __future__ import annotations

import torch
import torch.distributed as dist

from mmray.data.tensors import SplitTensors
from mmray.data.transforms import normalize_images
from mmray.metrics import retrieval_metrics
from mmray.models.dual_encoder import DualEncoder


def _shard(count: int, rank: int, world: int) -> slice:
    per_rank = -(-count // world)
    return slice(rank * per_rank, min(count, (rank + 1) * per_rank))


def _gather_rows(local: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Concatenate every rank's rows (ranks hold equal-size shards except the last). -> (total, E)"""
    if world == 1:
        return local
    per_rank = -(-total // world)
    padded = torch.zeros(per_rank, local.shape[1], dtype=local.dtype)  # (per_rank, E)
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return torch.cat(pieces)[:total]  # (total, E)


@torch.no_grad()
def embed_split(
    model: DualEncoder,
    tensors: SplitTensors,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 embeddings of all images (N, E) and captions (C, E); each rank embeds one shard."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    images, texts = [], []
    image_rows = _shard(tensors.num_images, rank, world)
    for start in range(image_rows.start, image_rows.stop, batch_size):
        stop = min(start + batch_size, image_rows.stop)
        batch = normalize_images(tensors.images[start:stop].to(device), mean, std)  # (b, 3, S, S)
        images.append(model.embed_images(batch).float().cpu())  # (b, E)
    caption_rows = _shard(tensors.caption_ids.shape[0], rank, world)
    for start in range(caption_rows.start, caption_rows.stop, batch_size):
        stop = min(start + batch_size, caption_rows.stop)
        ids = tensors.caption_ids[start:stop].to(device)  # (b, L)
        mask = tensors.caption_mask[start:stop].to(device)  # (b, L)
        texts.append(model.embed_texts(ids, mask).float().cpu())  # (b, E)
    model.train(was_training)
    local_images = torch.cat(images) if images else torch.zeros(0, model.embed_dim)
    local_texts = torch.cat(texts) if texts else torch.zeros(0, model.embed_dim)
    return (
        _gather_rows(local_images, tensors.num_images, world),
        _gather_rows(local_texts, tensors.caption_ids.shape[0], world),
    )


def evaluate_split(
    model: DualEncoder,
    tensors: SplitTensors,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> dict[str, float]:
    """COCO-protocol retrieval metrics of `model` on a split (identical on every rank)."""
    image_embeddings, text_embeddings = embed_split(model, tensors, mean, std, batch_size, rank, world, device)
    return retrieval_metrics(image_embeddings, text_embeddings, tensors.caption_image)
