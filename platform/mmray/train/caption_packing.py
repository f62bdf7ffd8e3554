"""Every caption as a training pair (`data.captions_per_epoch: all`), packed so that no global batch
holds two captions of the same image: in-batch negatives are then always other images."""

from __future__ import annotations

from collections import deque

import torch


def _round_order(caption_image: torch.Tensor, num_images: int, generator: torch.Generator) -> torch.Tensor:
    """All caption indices, in rounds: round r holds the r-th caption (in a shuffled order) of each
    image that has more than r, its images in a fresh random order. -> (C,)"""
    num_captions = caption_image.shape[0]
    draws = torch.rand(num_captions, generator=generator)  # (C,)
    by_image = torch.argsort(caption_image.double() * 2 + draws.double())  # (C,) grouped by image, shuffled within
    grouped_images = caption_image[by_image]  # (C,)
    starts = torch.searchsorted(grouped_images, grouped_images, right=False)  # (C,) first slot of each image
    round_of = torch.empty(num_captions, dtype=torch.long)
    round_of[by_image] = torch.arange(num_captions) - starts  # (C,) rank of a caption within its image
    rounds = round_of.max().item() + 1 if num_captions else 0
    image_rank = torch.empty(num_images, dtype=torch.long)
    key = torch.empty(num_captions, dtype=torch.long)
    for round_index in range(int(rounds)):
        image_rank[torch.randperm(num_images, generator=generator)] = torch.arange(num_images)
        members = round_of == round_index  # (C,)
        key[members] = round_index * num_images + image_rank[caption_image[members]]
    return torch.argsort(key)  # (C,)


def pack_distinct_images(
    caption_image: torch.Tensor,  # (C,) int64: the image of each caption
    num_images: int,
    global_batch: int,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """`steps` global batches of caption indices, no image twice in a batch. -> (steps, global_batch)

    Captions are taken in rounds (every image's first caption, then every second, ...); a caption whose image is
    already in the batch waits for the next one. Each is used at most once, except where the last rounds hold too
    few images to fill a batch: those batches are completed with captions of other images drawn again."""
    if num_images < global_batch:
        raise ValueError(f"{num_images} images cannot fill a batch of {global_batch} with distinct images")
    queue = deque(_round_order(caption_image, num_images, generator).tolist())
    images = caption_image.tolist()
    batches: list[list[int]] = []
    while len(batches) < steps:
        batch: list[int] = []
        seen: set[int] = set()
        waiting: list[int] = []
        while queue and len(batch) < global_batch:
            caption = queue.popleft()
            if images[caption] in seen:
                waiting.append(caption)
            else:
                batch.append(caption)
                seen.add(images[caption])
        queue.extendleft(reversed(waiting))
        if len(batch) < global_batch:
            batch.extend(_draw_other_images(images, seen, global_batch - len(batch), generator))
        batches.append(batch)
    return torch.tensor(batches, dtype=torch.long).reshape(steps, global_batch)


def _draw_other_images(images: list[int], taken: set[int], count: int, generator: torch.Generator) -> list[int]:
    """`count` random captions whose images are all different and not in `taken`."""
    chosen: list[int] = []
    for caption in torch.randperm(len(images), generator=generator).tolist():
        image = images[caption]
        if image not in taken:
            chosen.append(caption)
            taken.add(image)
            if len(chosen) == count:
                break
    return chosen
