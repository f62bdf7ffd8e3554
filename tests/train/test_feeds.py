from __future__ import annotations

import itertools

import torch

from mmray.data.tensors import SplitTensors
from mmray.train.feeds import memory_batches
from mmray.train.schedule import warmup_cosine


def _tensors(images: int, captions_per_image: int) -> SplitTensors:
    count = images * captions_per_image
    return SplitTensors(
        image_ids=torch.arange(images) + 100,
        images=torch.arange(images, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(),
        caption_ids=torch.arange(count).view(-1, 1),
        caption_mask=torch.ones(count, 1, dtype=torch.bool),
        caption_image=torch.arange(images).repeat_interleave(captions_per_image),
        caption_offsets=torch.arange(0, count + 1, captions_per_image),
        labels=torch.zeros(images, 0),
        object_count=torch.arange(images, dtype=torch.float32),
        covered_fraction=torch.zeros(images),
        boxes=torch.zeros(images, 0, 4),
        box_count=torch.zeros(images, dtype=torch.long),
    )


FIELDS = ("images", "caption_ids", "caption_mask", "object_count")


def test_ranks_split_each_global_batch_without_overlap() -> None:
    tensors = _tensors(images=50, captions_per_image=3)
    per_rank = [list(memory_batches(tensors, FIELDS, rank, 2, global_batch=8, seed=1, epoch=0)) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 50 // 8
    seen: list[int] = []
    for first, second in zip(*per_rank, strict=True):
        images = [int(v) for v in torch.cat([first["images"], second["images"]])[:, 0, 0, 0]]
        assert len(set(images)) == 8
        seen.extend(images)
        owners = torch.cat([first["caption_ids"], second["caption_ids"]])[:, 0] // 3
        assert owners.tolist() == images, "each image comes with one of its own captions"
        counts = torch.cat([first["object_count"], second["object_count"]]).long().tolist()
        assert counts == images, "per-image targets travel with their image"
    assert len(set(seen)) == len(seen) == 48
    again = [int(v) for b in memory_batches(tensors, FIELDS, 0, 2, 8, seed=1, epoch=0) for v in b["images"][:, 0, 0, 0]]
    other_epoch = [
        int(v) for b in memory_batches(tensors, FIELDS, 0, 2, 8, seed=1, epoch=1) for v in b["images"][:, 0, 0, 0]
    ]
    assert again == [int(v) for b in per_rank[0] for v in b["images"][:, 0, 0, 0]] and again != other_epoch


def test_warmup_then_cosine_to_the_floor() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=2, min_ratio=0.1)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == 0.5 and rates[1] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))
    assert abs(optimizer.param_groups[0]["lr"] - 0.1) < 1e-9
