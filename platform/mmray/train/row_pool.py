"""A shuffle buffer of prepared rows: rows added a shard at a time as they are read, batches drawn from it
at random, so a rank mixes many shards without holding its whole share."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

Rows = dict[str, np.ndarray]
"""Prepared rows, every array with one entry per image: image (n, 3, S, S) uint8, captions (n,) lists of
str, labels (n, K) float32, object_count and covered_fraction (n,) float32; or features in their place."""


def num_rows(rows: Rows) -> int:
    return int(rows["image_id"].shape[0])


class RowPool:
    """Rows held for drawing batches at random. Its storage is allocated for `expected` rows at the first
    add (more if needed) and kept when emptied, so a worker reuses it every epoch (allocating and touching
    hundreds of MB anew each epoch costs more than the copying)."""

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self.arrays: Rows = {}
        self.count = 0

    def clear(self) -> None:
        for values in self.arrays.values():
            if values.dtype == object:
                values[: self.count] = None
        self.count = 0

    def add(self, rows: Rows) -> None:
        added = num_rows(rows)
        needed = self.count + added
        if self.arrays and rows.keys() != self.arrays.keys():
            self.arrays, self.count, needed = {}, 0, added  # other fields (features in place of pixels)
        if not self.arrays or needed > num_rows(self.arrays):
            room = max(needed, self.expected, 2 * num_rows(self.arrays) if self.arrays else 0)
            grown = {name: np.empty((room, *values.shape[1:]), dtype=values.dtype) for name, values in rows.items()}
            for name, values in self.arrays.items():
                grown[name][: self.count] = values[: self.count]
            self.arrays = grown
        for name, values in rows.items():
            self.arrays[name][self.count : needed] = values
        self.count = needed

    def take(self, size: int, generator: torch.Generator) -> Rows:
        """`size` rows drawn at random (removed: the last rows held move into their places)."""
        chosen = torch.randperm(self.count, generator=generator)[:size].numpy()  # (b,)
        taken = {name: values[chosen] for name, values in self.arrays.items()}
        left = self.count - size
        holes = chosen[chosen < left]  # places below the new end that the draw emptied
        movers = np.setdiff1d(np.arange(left, self.count), chosen, assume_unique=True)  # rows above it still held
        for values in self.arrays.values():
            values[holes] = values[movers]
            if values.dtype == object:
                values[left : self.count] = None  # no references kept to rows given out
        self.count = left
        return taken


def pooled_batches(
    reads: Iterator[Rows],
    first_fill: int,
    capacity: int,
    batch: int,
    steps: int,
    generator: torch.Generator,
    pool: RowPool | None = None,
) -> Iterator[Rows]:
    """Up to `steps` batches of `batch` rows drawn at random from a pool filled from `reads` in order: to `first_fill`
    rows before the first batch, then to one batch more before each next one, up to `capacity` (so the first batch waits
    for a few shards only, and the reads need to outpace training by 2× during the ramp). Which rows are drawn depends
    only on the reads' order and `generator`. `pool`: one to reuse (emptied first)."""
    pool = pool if pool is not None else RowPool()
    pool.expected = max(pool.expected, capacity)
    pool.clear()
    target = first_fill
    for _ in range(steps):
        while pool.count < max(target, batch) and (rows := next(reads, None)) is not None:
            pool.add(rows)
        if pool.count < batch:
            return
        yield pool.take(batch, generator)
        target = min(capacity, target + batch)
