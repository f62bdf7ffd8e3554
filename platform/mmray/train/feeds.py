"""Batches for one worker: from a split held in memory, or from a Ray Data shard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mmray.data.tensors import SplitTensors, sample_caption_per_image


@dataclass
class Batch:
    images: torch.Tensor  # (b, 3, S, S) uint8
    ids: torch.Tensor  # (b, L) int64
    mask: torch.Tensor  # (b, L) bool


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The same permutation on every rank for a (seed, epoch). -> (N,)"""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def steps_per_epoch(num_images: int, global_batch: int) -> int:
    """Full global batches per epoch (the remainder is dropped, a new order each epoch)."""
    steps = num_images // global_batch
    if steps < 1:
        raise ValueError(f"the split has {num_images} images, fewer than one global batch of {global_batch}")
    return steps


def memory_batches(
    tensors: SplitTensors,
    rank: int,
    world: int,
    global_batch: int,
    seed: int,
    epoch: int,
) -> Iterator[Batch]:
    """This rank's slice of each global batch of the epoch, one random caption per image."""
    order = epoch_order(tensors.num_images, seed, epoch)
    captions = sample_caption_per_image(tensors, torch.Generator().manual_seed(seed * 7919 + epoch))
    local = global_batch // world
    for step in range(steps_per_epoch(tensors.num_images, global_batch)):
        chosen = order[step * global_batch + rank * local : step * global_batch + (rank + 1) * local]  # (b,)
        picked = captions[chosen]  # (b,)
        yield Batch(
            images=tensors.images[chosen],
            ids=tensors.caption_ids[picked],
            mask=tensors.caption_mask[picked],
        )
