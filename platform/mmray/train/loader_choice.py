"""Which training feed a job gets: the split decoded into memory, or streamed by Ray Data (`train.loader`,
`auto` deciding by the decoded split's size)."""

from __future__ import annotations

import logging
from typing import Literal

from mmray.config import TrainJob
from mmray.errors import ConfigError
from mmray.tasks.base import Task

logger = logging.getLogger(__name__)

Loader = Literal["memory", "ray_data"]

MEMORY_LOADER_LIMIT_BYTES = 2 * 2**30
"""`auto` streams a training split whose decoded images (uint8, 3 × S × S each) would exceed this: the
memory loader holds them on the driver and once more in Ray's object store."""


def memory_only_reason(spec: TrainJob, task: Task) -> tuple[str, str] | None:
    """Why the job needs its split in memory (what the stream does not carry) and what to change, or None."""
    if task.example_unit == "caption":
        why = f"task {spec.task.kind!r} trains on every caption (its targets belong to captions)"
        return why, "train.loader=ray_data draws one caption per image, so use train.loader=memory"
    if spec.train.augment.flip != "none":
        why = "train.augment.flip=unless_sides reads each example's caption"
        return why, "train.loader=ray_data does not carry it, so use train.loader=memory or augment.flip=none"
    if getattr(spec.model, "init_projections", "random") == "procrustes":
        why = "model.init_projections=procrustes computes the heads' start from the whole training split"
        return why, "train.loader=ray_data streams it, so use train.loader=memory"
    if spec.data.captions_per_epoch == "all":
        why = "data.captions_per_epoch=all packs every caption into batches held in memory"
        fix = "train.loader=ray_data draws one caption per image, so use train.loader=memory or captions_per_epoch=one"
        return why, fix
    return None


def decoded_bytes(num_images: int, image_size: int) -> int:
    return num_images * 3 * image_size * image_size


def choose_loader(spec: TrainJob, task: Task, num_images: int, image_size: int, can_stream: bool = True) -> Loader:
    """The job's loader, `auto` resolved (and said in the log); a streamed job that needs memory is refused."""
    size = decoded_bytes(num_images, image_size)
    described = f"{num_images} training images at {image_size} px, {size / 2**30:.2f} GiB decoded"
    reason = memory_only_reason(spec, task)
    if spec.train.loader == "ray_data":
        if reason is not None:
            raise ConfigError(f"{reason[0]}; {reason[1]}")
        if not can_stream:
            raise ConfigError("a local run holds its splits in memory: use train.loader=memory (or auto) with --local")
        return "ray_data"
    if spec.train.loader == "memory":
        return "memory"
    if size <= MEMORY_LOADER_LIMIT_BYTES:
        logger.info("train.loader=auto: memory (%s, within %d GiB)", described, MEMORY_LOADER_LIMIT_BYTES // 2**30)
        return "memory"
    held = reason[0] if reason else ("a local run holds its splits in memory" if not can_stream else None)
    if held is not None:
        logger.warning("train.loader=auto: memory though the split is large (%s): %s", described, held)
        return "memory"
    logger.info(
        "train.loader=auto: ray_data (%s, over %d GiB: streamed, decoded by Ray Data on the cluster)",
        described,
        MEMORY_LOADER_LIMIT_BYTES // 2**30,
    )
    return "ray_data"
