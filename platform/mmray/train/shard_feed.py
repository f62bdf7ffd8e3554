"""The prepared split (`mmray data prepare --shards`) read by each training worker itself (`train.loader: shards`):
no Ray Data, no decoding, nothing held on the driver. Each epoch a rank reads its share of the shards, in an order
drawn from (seed, epoch), ahead of training into a pool (`POOL_BYTES`) its batches are drawn from at random."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from mmray.data.prepared import read_table, table_records
from mmray.data.processor import Processor
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES
from mmray.errors import DataError, reading
from mmray.train.feeds import CAPTION_FIELDS, PER_IMAGE_FIELDS, caption_generator, caption_per_row, epoch_order
from mmray.train.row_pool import RowPool, Rows, pooled_batches

POOL_BYTES = 256 * 2**20
"""Pixels a rank draws its batches from: 21,000 images at 64 px, 1,700 at 224 px. Images of one shard enter
the pool together; two epochs' batches share 1.01× the in-batch pairs of two random shuffles at 10k or 100k
images at 64 px, 1.13× for COCO train2017's 118k at 224 px (batches of 64 per rank, 2 ranks)."""
FIRST_FILL_ROWS = 1024
"""Images in the pool before an epoch's first batch; it then grows by a batch per batch up to `POOL_BYTES`."""
READ_THREADS = 8
"""Shards read at once (S3 reads wait on the network)."""
READ_AHEAD_ROWS = 1024
"""Images read ahead of the pool (in flight or waiting)."""


@dataclass(frozen=True)
class PreparedShards:
    """A prepared split's shards (absolute URIs), the number of images each holds, and a hash of their
    contents; or the same split's shards with frozen towers' features (`train.feature_shards`)."""

    uris: list[str]
    rows: list[int]
    fingerprint: str

    @property
    def num_rows(self) -> int:
        return sum(self.rows)


@dataclass(frozen=True)
class Span:
    """Rows [start, stop) of shard number `shard`."""

    shard: int
    start: int
    stop: int


def rank_spans(rows: Sequence[int], seed: int, epoch: int, rank: int, world: int) -> list[Span]:
    """This rank's share of an epoch: the shards in the order drawn for (seed, epoch), their rows laid end
    to end, and the rank's contiguous 1/world of them (two ranks split the shard where their shares meet)."""
    total = sum(rows)
    first, last = rank * total // world, (rank + 1) * total // world
    spans, offset = [], 0
    for shard in epoch_order(len(rows), seed, epoch).tolist():
        start, stop = max(first, offset), min(last, offset + rows[shard])
        if start < stop:
            spans.append(Span(shard, start - offset, stop - offset))
        offset += rows[shard]
    return spans


def read_span(uri: str, span: Span, size: int) -> Rows:
    """A span of a shard as rows (with `image_features` (n, D) and `caption_features` (n,) arrays (c_i, D)
    where the shard holds them), or a DataError naming the shard when its contents are damaged."""
    table = read_table(uri).slice(span.start, span.stop - span.start)
    if table.num_rows != span.stop - span.start:
        raise DataError(f"the prepared shard {uri} holds fewer rows than its manifest says; prepare the split again")
    with reading(f"the prepared shard {uri}", DataError):
        found = table_records(table)
        if IMAGE_FEATURES in table.column_names:
            found[IMAGE_FEATURES] = np.stack([vector_of(data) for data in table.column(IMAGE_FEATURES).to_pylist()])
        else:
            found["image"] = _pixels(table.column("image").combine_chunks(), size, uri)  # (n, 3, S, S)
        if TEXT_FEATURES in table.column_names:
            per_row = [np.stack([vector_of(data) for data in row]) for row in table.column(TEXT_FEATURES).to_pylist()]
            found[TEXT_FEATURES] = np.asarray([*per_row, None], dtype=object)[:-1]
    return found


def _pixels(images: pa.BinaryArray | pa.LargeBinaryArray, size: int, uri: str) -> np.ndarray:
    """A binary column of uint8 (3, S, S) images as one array, read from the column's buffers (32-bit offsets,
    or 64-bit where another tool rewrote the shard as large_binary). -> (n, 3, S, S)"""
    count = len(images)
    width = np.int64 if pa.types.is_large_binary(images.type) else np.int32
    offsets = np.frombuffer(images.buffers()[1], dtype=width)[images.offset : images.offset + count + 1]
    lengths = np.diff(offsets)
    wrong = np.flatnonzero(lengths != 3 * size * size)
    if wrong.size:
        reason = f"its pixels are {lengths[wrong[0]]} bytes, not 3 × {size} × {size}"
        raise DataError(f"an image of the prepared shard {uri} is damaged ({reason}); prepare the split again")
    data = np.frombuffer(images.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(count, 3, size, size).copy()


def vector_of(data: bytes) -> np.ndarray:
    """A stored float32 feature vector. -> (D,)"""
    return np.frombuffer(data, dtype=np.float32)


def _ordered_reads(spans: Sequence[Span], shards: PreparedShards, size: int) -> Iterator[Rows]:
    """The spans' rows in order, read `READ_THREADS` at a time up to `READ_AHEAD_ROWS` ahead."""
    pool = ThreadPoolExecutor(READ_THREADS)
    pending: deque[tuple[int, Future[Rows]]] = deque()
    following, ahead = 0, 0
    try:
        while pending or following < len(spans):
            while following < len(spans) and (not pending or ahead < READ_AHEAD_ROWS):
                span = spans[following]
                pending.append((span.stop - span.start, pool.submit(read_span, shards.uris[span.shard], span, size)))
                ahead += span.stop - span.start
                following += 1
            rows, future = pending.popleft()
            ahead -= rows
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batch(
    rows: Rows, fields: Sequence[str], processor: Processor, captions: torch.Generator
) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = {}
    if "images" in fields:
        batch["images"] = torch.from_numpy(rows["image"])  # (b, 3, S, S) uint8
    if IMAGE_FEATURES in fields:
        batch[IMAGE_FEATURES] = torch.from_numpy(rows[IMAGE_FEATURES])  # (b, D_img)
    picked = caption_per_row(torch.tensor([len(texts) for texts in rows["captions"]]), captions).tolist()
    if any(name in fields for name in CAPTION_FIELDS):
        tokens = processor.tokenize([texts[i] for texts, i in zip(rows["captions"], picked, strict=True)])
        batch["caption_ids"], batch["caption_mask"] = tokens.ids, tokens.mask  # (b, L), (b, L)
    if TEXT_FEATURES in fields:
        chosen = [features[i] for features, i in zip(rows[TEXT_FEATURES], picked, strict=True)]
        batch[TEXT_FEATURES] = torch.from_numpy(np.stack(chosen))  # (b, D_txt)
    for name in PER_IMAGE_FIELDS:
        if name in fields and name in rows:
            batch[name] = torch.from_numpy(rows[name])
    return batch


def shard_batches(
    shards: PreparedShards,
    processor: Processor,
    fields: Sequence[str],
    local_batch: int,
    steps: int,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    pool_bytes: int = POOL_BYTES,
    pool: RowPool | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's `steps` batches of `local_batch` images for the epoch (each image at most once), drawn
    at random from a pool of up to `pool_bytes` of pixels (`row_pool.pooled_batches`), one caption drawn
    per image, all seeded by (seed, epoch, rank). `pool`: the rank's pool, kept from epoch to epoch."""
    size = processor.image.size
    capacity = max(local_batch, pool_bytes // (3 * size * size))
    reads = _ordered_reads(rank_spans(shards.rows, seed, epoch, rank, world), shards, size)
    shuffle = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)
    captions = caption_generator(seed, epoch, rank)
    made = 0
    for rows in pooled_batches(reads, FIRST_FILL_ROWS, capacity, local_batch, steps, shuffle, pool):
        yield _batch(rows, fields, processor, captions)
        made += 1
    if made < steps:
        raise DataError(
            f"rank {rank} read {made} of its {steps} batches of {local_batch} from the prepared shards: they hold "
            "fewer images than their manifest says; prepare the split again"
        )
