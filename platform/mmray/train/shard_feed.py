"""The prepared split (`mmray data prepare --shards`) read by each training worker itself (`train.loader:
shards`): no Ray Data, no decoding, nothing held on the driver. Every epoch the shards come in a new order
drawn from (seed, epoch); each rank reads its contiguous share of that order a window of shards at a time, the
next window fetched while the current one trains, its rows shuffled across the window, and one caption per
image drawn and tokenised as its batch is formed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from mmray.data.prepared import read_table, stored_pixels, table_records
from mmray.data.processor import Processor
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES, sample_caption_per_image
from mmray.errors import DataError
from mmray.train.feeds import CAPTION_FIELDS, PER_IMAGE_FIELDS, caption_generator, epoch_order

WINDOW_BYTES = 256 * 2**20
"""Pixels a rank shuffles together (one window trained on while the next is read): 21,000 images at 64 px,
1,700 at 224 px. Images of one shard always share a window, so two epochs' batches share more pairs than two
random shuffles' by about N × R / W² (N images, R per shard, W per window): about 0.6 for COCO train2017 at 224 px
in shards of 16."""
READ_THREADS = 8
"""Shards read at once (S3 reads wait on the network)."""

Rows = dict[str, np.ndarray]
"""Prepared rows: image (n, 3, S, S) uint8, captions (n,) lists of str, labels (n, K) float32,
object_count and covered_fraction (n,) float32."""


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


def windows(spans: Sequence[Span], rows_per_window: int) -> list[list[Span]]:
    """Consecutive spans grouped into windows of at most `rows_per_window` rows (or one span, if larger)."""
    grouped: list[list[Span]] = []
    held = rows_per_window
    for span in spans:
        size = span.stop - span.start
        if held + size > rows_per_window:
            grouped.append([])
            held = 0
        grouped[-1].append(span)
        held += size
    return grouped


def read_span(uri: str, span: Span, size: int) -> Rows:
    """A span of a shard as rows (with `image_features` (n, D) and `caption_features` (n,) arrays (c_i, D)
    where the shard holds them), or a DataError naming the shard when its contents are damaged."""
    table = read_table(uri).slice(span.start, span.stop - span.start)
    if table.num_rows != span.stop - span.start:
        raise DataError(f"the prepared shard {uri} holds fewer rows than its manifest says; prepare the split again")
    found = table_records(table)
    if "image" in found:
        pixels = [stored_pixels(data, size, uri) for data in found.pop("image")]
        damaged = next((reason for reason in pixels if isinstance(reason, str)), None)
        if damaged is not None:
            raise DataError(f"an image of the prepared shard {uri} is damaged ({damaged}); prepare the split again")
        found["image"] = np.stack(pixels)  # type: ignore[arg-type]  # (n, 3, S, S)
    if IMAGE_FEATURES in table.column_names:
        found[IMAGE_FEATURES] = np.stack([vector_of(data) for data in table.column(IMAGE_FEATURES).to_pylist()])
    if TEXT_FEATURES in table.column_names:
        per_row = [np.stack([vector_of(data) for data in row]) for row in table.column(TEXT_FEATURES).to_pylist()]
        found[TEXT_FEATURES] = np.asarray([*per_row, None], dtype=object)[:-1]
    return found


def vector_of(data: bytes) -> np.ndarray:
    """A stored float32 feature vector. -> (D,)"""
    return np.frombuffer(data, dtype=np.float32)


def _concatenated(parts: Sequence[Rows]) -> Rows:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _taken(rows: Rows, chosen: np.ndarray) -> Rows:
    return {name: values[chosen] for name, values in rows.items()}


def _read_ahead(groups: Sequence[Sequence[Span]], shards: PreparedShards, size: int) -> Iterator[list[Rows]]:
    """Each window's rows, a part per span, the next window's shards read while the current one is used (the
    consumer empties each list it is given, so that a window is held once)."""
    pool = ThreadPoolExecutor(READ_THREADS)

    def submit(group: Sequence[Span]) -> list[Future[Rows]]:
        return [pool.submit(read_span, shards.uris[span.shard], span, size) for span in group]

    try:
        pending = submit(groups[0]) if groups else []
        for index in range(len(groups)):
            parts = [future.result() for future in pending]
            pending = submit(groups[index + 1]) if index + 1 < len(groups) else []
            yield parts
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
    counts = torch.tensor([len(texts) for texts in rows["captions"]])  # (b,)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # (b + 1,)
    picked = (sample_caption_per_image(offsets, captions) - offsets[:-1]).tolist()  # index among the row's
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
    window_bytes: int = WINDOW_BYTES,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's `steps` batches of `local_batch` images for the epoch (each image at most once), their
    rows shuffled within windows of `window_bytes` of pixels and one caption drawn per image, all seeded by
    (seed, epoch, rank)."""
    size = processor.image.size
    per_window = max(local_batch, window_bytes // (3 * size * size))
    groups = windows(rank_spans(shards.rows, seed, epoch, rank, world), per_window)
    shuffle = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)
    captions = caption_generator(seed, epoch, rank)
    made = 0
    carried: list[Rows] = []
    for parts in _read_ahead(groups, shards, size):
        rows = _concatenated([*carried, *parts])
        parts.clear()
        count = rows["image_id"].shape[0]
        order = torch.randperm(count, generator=shuffle).numpy()  # (n,)
        full = count // local_batch
        for index in range(min(full, steps - made)):
            chosen = order[index * local_batch : (index + 1) * local_batch]  # (b,)
            yield _batch(_taken(rows, chosen), fields, processor, captions)
            made += 1
        if made == steps:
            return
        carried = [_taken(rows, order[full * local_batch :])]
    raise DataError(
        f"rank {rank} read {made} of its {steps} batches of {local_batch} from the prepared shards: they hold fewer "
        "images than their manifest says; prepare the split again"
    )
