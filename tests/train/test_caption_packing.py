"""`data.captions_per_epoch: all`: every caption is a training pair and no global batch holds two
captions of one image."""

from __future__ import annotations

import pytest
import torch

from mmray.data.tensors import SplitTensors
from mmray.train.caption_packing import pack_distinct_images
from mmray.train.feeds import memory_batches


def _coco_like(images: int, seed: int = 0) -> torch.Tensor:
    """The image of each caption, 5 to 7 captions per image as in COCO. -> (C,)"""
    counts = torch.randint(5, 8, (images,), generator=torch.Generator().manual_seed(seed))  # (N,)
    return torch.arange(images).repeat_interleave(counts)  # (C,)


def _assert_distinct_per_batch(packed: torch.Tensor, caption_image: torch.Tensor) -> None:
    for batch in packed:
        images = caption_image[batch]
        assert images.unique().numel() == images.numel(), f"an image twice in one batch: {images.tolist()}"


def test_every_caption_is_seen_once_per_epoch_and_no_batch_repeats_an_image() -> None:
    caption_image = _coco_like(80)  # about 480 captions
    steps = caption_image.numel() // 16
    packed = pack_distinct_images(caption_image, 80, 16, steps, torch.Generator().manual_seed(3))
    assert packed.shape == (steps, 16)
    _assert_distinct_per_batch(packed, caption_image)
    used = packed.reshape(-1)
    assert used.unique().numel() == used.numel(), "a caption used twice in one epoch"
    assert caption_image.numel() - used.numel() < 16, "all but fewer than a batch of captions are seen"
    again = pack_distinct_images(caption_image, 80, 16, steps, torch.Generator().manual_seed(3))
    other = pack_distinct_images(caption_image, 80, 16, steps, torch.Generator().manual_seed(4))
    assert torch.equal(packed, again) and not torch.equal(packed, other)


def test_batches_mix_images_anew_in_every_round() -> None:
    """An image's captions meet different other images, not the same batch-mates five times."""
    caption_image = torch.arange(64).repeat_interleave(5)
    packed = pack_distinct_images(caption_image, 64, 16, 20, torch.Generator().manual_seed(0))
    mates: dict[int, set[int]] = {}
    for batch in packed:
        images = set(caption_image[batch].tolist())
        for image in images:
            mates.setdefault(image, set()).update(images - {image})
    assert min(len(found) for found in mates.values()) > 30, "each image met more than two batches' worth"


def test_an_image_with_many_captions_still_gives_full_batches_of_distinct_images() -> None:
    caption_image = torch.cat([torch.zeros(50, dtype=torch.long), torch.arange(1, 21)])  # image 0: 50 captions
    steps = caption_image.numel() // 8
    packed = pack_distinct_images(caption_image, 21, 8, steps, torch.Generator().manual_seed(1))
    assert packed.shape == (steps, 8)
    _assert_distinct_per_batch(packed, caption_image)


def test_fewer_images_than_a_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="4 images cannot fill a batch of 8"):
        pack_distinct_images(torch.arange(4).repeat(5), 4, 8, 2, torch.Generator())


def _split(caption_image: torch.Tensor) -> SplitTensors:
    images = int(caption_image.max()) + 1
    counts = torch.bincount(caption_image, minlength=images)
    return SplitTensors(
        image_ids=torch.arange(images),
        images=torch.arange(images, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(),
        caption_ids=torch.arange(caption_image.numel()).view(-1, 1),
        caption_mask=torch.ones(caption_image.numel(), 1, dtype=torch.bool),
        caption_image=caption_image,
        caption_offsets=torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
        labels=torch.zeros(images, 0),
        object_count=torch.arange(images, dtype=torch.float32),
        covered_fraction=torch.zeros(images),
        boxes=torch.zeros(images, 0, 4),
        box_count=torch.zeros(images, dtype=torch.long),
    )


def test_two_ranks_share_each_packed_batch_and_images_travel_with_their_captions() -> None:
    caption_image = _coco_like(40, seed=2)
    split = _split(caption_image)
    fields = ("images", "caption_ids", "caption_mask", "object_count")
    per_rank = [list(memory_batches(split, fields, rank, 2, 8, seed=5, epoch=1, every_caption=True)) for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == caption_image.numel() // 8
    seen: list[int] = []
    for first, second in zip(*per_rank, strict=True):
        captions = torch.cat([first["caption_ids"], second["caption_ids"]])[:, 0]  # (8,)
        images = torch.cat([first["images"], second["images"]])[:, 0, 0, 0].long()  # (8,)
        assert torch.equal(caption_image[captions], images), "each caption comes with its own image"
        assert images.unique().numel() == 8
        assert torch.equal(torch.cat([first["object_count"], second["object_count"]]).long(), images)
        seen.extend(captions.tolist())
    assert len(set(seen)) == len(seen) > caption_image.numel() - 8
