"""Batches for one worker, as dicts of the fields a task asks for: from a split held in memory, or from a Ray Data
shard."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mmray.data.tensors import SplitTensors, sample_caption_per_image
from mmray.train.caption_packing import pack_distinct_images

CAPTION_FIELDS = ("caption_ids", "caption_mask")
PER_IMAGE_FIELDS = ("labels", "object_count", "covered_fraction", "boxes", "box_count")


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The same permutation on every rank for a (seed, epoch). -> (N,)"""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def caption_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7919 + epoch * 104_729 + rank)


def caption_per_row(counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption drawn per row among its `counts` (b,) captions: its index among the row's. -> (b,)"""
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # (b + 1,)
    return sample_caption_per_image(offsets, generator) - offsets[:-1]


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Full global batches per epoch (the remainder is dropped, a new order each epoch)."""
    steps = num_examples // global_batch
    if steps < 1:
        raise ValueError(f"the split has {num_examples} examples, fewer than one global batch of {global_batch}")
    return steps


def memory_batches(
    tensors: SplitTensors,
    fields: Sequence[str],
    rank: int,
    world: int,
    global_batch: int,
    seed: int,
    epoch: int,
    example_captions: torch.Tensor | None = None,
    every_caption: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's slice of each global batch of the epoch, with the requested fields (images uint8).

    Examples are the images, each with a caption drawn per epoch; with `every_caption`, every caption
    with its image, packed so that no global batch holds an image twice; or, given `example_captions`
    (E,), those captions, each with its image. Caption targets are batch fields under their own names."""
    local = global_batch // world
    if every_caption and example_captions is None:
        steps = steps_per_epoch(tensors.num_captions, global_batch)
        packed = pack_distinct_images(
            tensors.caption_image, tensors.num_images, global_batch, steps, caption_generator(seed, epoch)
        )  # (steps, G)
        images, captions = tensors.caption_image, torch.arange(tensors.num_captions)  # (C,), (C,)
        order = packed.reshape(-1)  # (steps * G,)
    else:
        if example_captions is None:
            images = torch.arange(tensors.num_images)  # (N,)
            captions = sample_caption_per_image(tensors.caption_offsets, caption_generator(seed, epoch))  # (N,)
        else:
            images, captions = tensors.caption_image[example_captions], example_captions  # (E,), (E,)
        order = epoch_order(images.shape[0], seed, epoch)
        steps = steps_per_epoch(images.shape[0], global_batch)
    per_image = {name: getattr(tensors, name) for name in ("images", *PER_IMAGE_FIELDS)} | tensors.image_extras
    per_caption = tensors.caption_targets | tensors.caption_extras  # caption targets under their own names
    for step in range(steps):
        chosen = order[step * global_batch + rank * local : step * global_batch + (rank + 1) * local]  # (b,)
        image_rows, caption_rows = images[chosen], captions[chosen]  # (b,), (b,)
        batch: dict[str, torch.Tensor] = {}
        if any(name in fields for name in CAPTION_FIELDS):
            batch["caption_ids"] = tensors.caption_ids[caption_rows]  # (b, L)
            batch["caption_mask"] = tensors.caption_mask[caption_rows]  # (b, L)
        for by_name, rows in ((per_image, image_rows), (per_caption, caption_rows)):
            for name, values in by_name.items():
                if name in fields:
                    batch[name] = values[rows]  # (b, ...): images (b, 3, S, S) uint8
        yield batch


SHUFFLE_BUFFER_BATCHES = 16
"""Local batches of rows each worker's shuffle buffer holds (mixing many of the stream's small blocks)."""


def shard_row_batches(shard: Any, local_batch: int, seed: int, epoch: int, rank: int) -> Iterator[dict[str, Any]]:
    """A Ray Data shard's rows in batches of `local_batch` (the rest dropped), shuffled within a local
    buffer of `SHUFFLE_BUFFER_BATCHES` batches seeded by (seed, epoch, rank)."""
    batches: Iterator[dict[str, Any]] = shard.iter_torch_batches(
        batch_size=local_batch,
        drop_last=True,
        local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * local_batch,
        local_shuffle_seed=seed * 1_000_003 + epoch * 1_009 + rank,
    )
    return batches


def stream_batches(
    shard: Any,
    fields: Sequence[str],
    local_batch: int,
    seed: int,
    epoch: int,
    rank: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of a Ray Data shard (`shard_row_batches`), one caption drawn per image."""
    generator = caption_generator(seed, epoch, rank)
    for row_batch in shard_row_batches(shard, local_batch, seed, epoch, rank):
        batch: dict[str, torch.Tensor] = {}
        if "images" in fields:
            batch["images"] = row_batch["image"]  # (b, 3, S, S)
        if any(name in fields for name in CAPTION_FIELDS):
            picked = caption_per_row(row_batch["caption_count"], generator)  # (b,)
            rows_index = torch.arange(picked.shape[0])
            batch["caption_ids"] = row_batch["caption_ids"][rows_index, picked]  # (b, L)
            batch["caption_mask"] = row_batch["caption_mask"][rows_index, picked]  # (b, L)
        for name in PER_IMAGE_FIELDS:
            if name in fields and name in row_batch:
                batch[name] = row_batch[name]
        yield batch
