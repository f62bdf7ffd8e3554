"""A gloo process group for one rank of a test spawned with `torch.multiprocessing.spawn`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist


@contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """This process as `rank` of `world` on 127.0.0.1:`port`, for the block's duration."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()
