"""Which training feed a job gets: the split decoded into memory, its prepared shards read by the workers,
or streamed by Ray Data from the images (`train.loader`, `auto` deciding by the decoded split's size and
whether the job names prepared shards)."""

from __future__ import annotations

import logging
from typing import Literal

from mmray.config import TrainJob
from mmray.errors import ConfigError
from mmray.tasks.base import Task

logger = logging.getLogger(__name__)

Loader = Literal["memory", "shards", "ray_data"]
STREAMED = ("shards", "ray_data")

MEMORY_LOADER_LIMIT_BYTES = 2 * 2**30
"""`auto` streams a training split whose decoded images (uint8, 3 × S × S each) would exceed this: the
memory loader holds them on the driver and once more in Ray's object store."""


def memory_only_reason(spec: TrainJob, task: Task, stream: str) -> tuple[str, str] | None:
    """Why the job needs its split in memory (what the `stream` loader does not carry) and what to change, or None."""
    if task.example_unit == "caption":
        why = f"task {spec.task.kind!r} trains on every caption (its targets belong to captions)"
        return why, f"train.loader={stream} draws one caption per image, so use train.loader=memory"
    if spec.train.augment.flip != "none":
        why = "train.augment.flip=unless_sides reads each example's caption"
        return why, f"train.loader={stream} does not carry it, so use train.loader=memory or augment.flip=none"
    if getattr(spec.model, "init_projections", "random") == "procrustes":
        why = "model.init_projections=procrustes computes the heads' start from the whole training split"
        return why, f"train.loader={stream} streams it, so use train.loader=memory"
    if spec.data.captions_per_epoch == "all":
        why = "data.captions_per_epoch=all packs every caption into batches held in memory"
        fix = f"train.loader={stream} draws one caption per image, so use train.loader=memory or captions_per_epoch=one"
        return why, fix
    return None


def choose_loader(spec: TrainJob, task: Task, num_images: int, image_size: int, can_stream: bool = True) -> Loader:
    """The job's loader, `auto` resolved (and said in the log); a streamed job that needs memory is refused.
    `can_stream`: whether Ray Data can feed the run (a local run has no Ray; it can read prepared shards)."""
    size = num_images * 3 * image_size * image_size  # decoded uint8 pixels
    described = f"{num_images} training images at {image_size} px, {size / 2**30:.2f} GiB decoded"
    wanted = spec.train.loader
    streamed: Loader = "shards" if spec.data.prepared is not None else "ray_data"  # what the job's data allows
    reason = memory_only_reason(spec, task, wanted if wanted in STREAMED else streamed)
    if wanted in STREAMED:
        if reason is not None:
            raise ConfigError(f"{reason[0]}; {reason[1]}")
        if wanted != streamed:
            raise ConfigError(
                "train.loader=shards reads the split prepared by `mmray data prepare JOB --shards URI`: set "
                "data.prepared=URI"
                if wanted == "shards"
                else f"data.prepared={spec.data.prepared} is read by train.loader=shards (each worker reads its "
                "share of the shards) or memory; train.loader=ray_data decodes the images"
            )
        if wanted == "ray_data" and not can_stream:
            raise ConfigError(
                "a local run has no Ray Data: use train.loader=memory (or auto), or train.loader=shards with a "
                "prepared split, with --local"
            )
        return wanted
    if wanted == "memory":
        return "memory"
    limit = MEMORY_LOADER_LIMIT_BYTES // 2**30
    if size <= MEMORY_LOADER_LIMIT_BYTES:
        logger.info("train.loader=auto: memory (%s, within %d GiB)", described, limit)
        return "memory"
    held = reason[0] if reason else None
    if held is None and streamed == "ray_data" and not can_stream:
        held = "a local run has no Ray Data to stream the images (prepared shards would be read)"
    if held is not None:
        logger.warning("train.loader=auto: memory though the split is large (%s): %s", described, held)
        return "memory"
    how = (
        "read by the workers from the prepared shards" if streamed == "shards" else "decoded by Ray Data on the cluster"
    )
    logger.info("train.loader=auto: %s (%s, over %d GiB: streamed, %s)", streamed, described, limit, how)
    return streamed
