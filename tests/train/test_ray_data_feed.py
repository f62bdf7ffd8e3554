"""The Ray Data training stream is seeded: the same seed gives the same batches epoch by epoch; each epoch is
a new permutation of the same rows (each row once per epoch, none lost or repeated), shuffled across the
whole split: two epochs share about as many in-batch pairs as two random shuffles would."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pyarrow as pa
import pytest
import ray.data
import torch

from mmray.data.coco import load_coco
from mmray.data.processor import ImageTransform, Processor
from mmray.data.record_columns import records_table
from mmray.data.shapes import split_paths
from mmray.data.tokenizers import WordTokenizer
from mmray.train.feeds import shard_row_batches, stream_batches
from mmray.train.ray_data_feed import reshuffled_rows, training_dataset
from mmray.train.trainer import ordered_ingest

pytestmark = pytest.mark.slow
FIELDS = ("images", "caption_ids", "caption_mask", "object_count")


def _epoch(dataset: ray.data.Dataset, seed: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    return list(stream_batches(dataset, FIELDS, local_batch=16, seed=seed, epoch=epoch, rank=0))


def _row_signatures(batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """One number per row that tells rows apart: a fixed random projection of its pixels."""
    images = torch.cat([b["images"] for b in batches]).flatten(1).double()  # (n, 3*h*w)
    projection = torch.randn(images.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [round(float(v), 6) for v in images @ projection]  # (n,)


def _pairs(batches: list[dict[str, torch.Tensor]]) -> set[frozenset[float]]:
    """The pairs of rows that met in a batch."""
    pairs: set[frozenset[float]] = set()
    for batch in batches:
        pairs.update(frozenset(pair) for pair in combinations(_row_signatures([batch]), 2))
    return pairs


def test_stream_is_seeded_and_reshuffled_every_epoch(ray_session: None, tiny_shapes: Path) -> None:
    paths = split_paths(str(tiny_shapes), "train")
    split = load_coco(paths.captions, paths.images, paths.instances, progress=False)
    processor = Processor(
        ImageTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        WordTokenizer.build([c for r in split.records for c in r.captions], 40),
    )
    ray.data.DataContext.get_current().execution_options = ordered_ingest()
    records, most = records_table(split.records), max(len(r.captions) for r in split.records)
    dataset, same_seed = training_dataset(records, processor, 3, most), training_dataset(records, processor, 3, most)

    first, other = _epoch(dataset, 3, 0), _epoch(dataset, 3, 1)
    assert len(first) == len(split.records) // 16
    for epoch, batches in enumerate((first, other)):
        for a, b in zip(batches, _epoch(same_seed, 3, epoch), strict=True):
            assert all(torch.equal(a[name], b[name]) for name in FIELDS), f"same seed: same batches in epoch {epoch}"
    assert not torch.equal(first[0]["images"], other[0]["images"]), "another epoch: another order"

    rows, other_rows = _row_signatures(first), _row_signatures(other)
    assert len(set(rows)) == len(rows) and len(set(other_rows)) == len(other_rows), "no row twice in an epoch"
    every_row = set(_row_signatures(_epoch(dataset, 3, 2))) | set(rows) | set(other_rows)
    assert len(every_row) == len(split.records), "the epochs together cover every row, and only those"

    pairs, other_pairs = _pairs(first), _pairs(other)
    chance = len(pairs) * (16 - 1) / (len(split.records) - 1)  # pairs two independent shuffles share on average
    shared = len(pairs & other_pairs)
    assert shared < 2 * chance + 10, f"{shared} in-batch pairs met again in the next epoch; a shuffle: ~{chance:.0f}"

    counts = torch.cat([b["object_count"] for b in first])  # (n,)
    in_file_order = torch.tensor([r.object_count for r in split.records], dtype=torch.float32)
    block_runs = [in_file_order[i : i + 16] for i in range(0, len(in_file_order), 16)]
    assert not any(torch.equal(counts[:16], run) for run in block_runs), "rows are shuffled inside blocks"

    captions = {tuple(b["caption_ids"][0].tolist()) for b in first}
    assert len(captions) > 1 and all(b["caption_mask"][:, 0].all() for b in first), "every row has a caption"


def test_a_large_split_meets_new_neighbours_every_epoch(ray_session: None) -> None:
    """At a size where a block holds many batches, two epochs share about the in-batch pairs two random
    shuffles would (a block-order shuffle with a local buffer keeps most rows beside the same neighbours)."""
    ray.data.DataContext.get_current().execution_options = ordered_ingest()
    rows, batch = 8192, 16
    dataset = reshuffled_rows(pa.table({"image_id": list(range(rows))}), seed=5)
    epochs = [[b["image_id"].tolist() for b in shard_row_batches(dataset, batch, 5, epoch, 0)] for epoch in (0, 1)]
    assert sorted(i for b in epochs[1] for i in b) == sorted(i for b in epochs[0] for i in b)
    met = [{frozenset(pair) for b in batches for pair in combinations(b, 2)} for batches in epochs]
    chance = len(met[0]) * (batch - 1) / (rows - 1)
    shared = len(met[0] & met[1])
    assert shared < 3 * chance + 10, f"{shared} of {len(met[0])} in-batch pairs met again; a shuffle: ~{chance:.0f}"


def test_a_split_without_instances_streams_rows_with_no_labels(ray_session: None, tiny_shapes: Path) -> None:
    """Captions only (no instances file): every record has zero labels, and the stream gives (batch, 0)."""
    paths = split_paths(str(tiny_shapes), "train")
    split = load_coco(paths.captions, paths.images, None, progress=False)
    assert split.records and all(len(r.labels) == 0 for r in split.records)
    processor = Processor(
        ImageTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        WordTokenizer.build([c for r in split.records for c in r.captions], 40),
    )
    dataset = training_dataset(records_table(split.records), processor, 3, 5)
    batch = next(iter(stream_batches(dataset, ("images", "labels"), local_batch=16, seed=3, epoch=0, rank=0)))
    assert batch["images"].shape[0] == 16 and batch["labels"].shape == (16, 0)
