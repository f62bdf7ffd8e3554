"""The Ray Data training stream is seeded: the same (seed, epoch) gives the same batches; another epoch is
another permutation of the same rows (each row once per epoch, none lost or repeated); rows are shuffled within
blocks, not only block by block."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.data
import torch

from mmray.data.coco import load_coco
from mmray.data.processor import ImageTransform, Processor
from mmray.data.shapes import split_paths
from mmray.data.tokenizers import WordTokenizer
from mmray.train.feeds import stream_batches
from mmray.train.ray_data_feed import training_dataset
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


def test_stream_is_seeded_per_epoch_and_shuffled_within_blocks(ray_session: None, tiny_shapes: Path) -> None:
    paths = split_paths(str(tiny_shapes), "train")
    split = load_coco(paths.captions, paths.images, paths.instances, progress=False)
    processor = Processor(
        ImageTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        WordTokenizer.build([c for r in split.records for c in r.captions], 40),
    )
    ray.data.DataContext.get_current().execution_options = ordered_ingest()
    dataset = training_dataset(split, processor, seed=3)

    first, again, other = _epoch(dataset, 3, 0), _epoch(dataset, 3, 0), _epoch(dataset, 3, 1)
    assert len(first) == len(split.records) // 16
    for a, b in zip(first, again, strict=True):
        assert all(torch.equal(a[name], b[name]) for name in FIELDS), "same seed and epoch: same batches"
    assert not torch.equal(first[0]["images"], other[0]["images"]), "another epoch: another order"

    rows, other_rows = _row_signatures(first), _row_signatures(other)
    assert len(set(rows)) == len(rows) and len(set(other_rows)) == len(other_rows), "no row twice in an epoch"
    every_row = set(_row_signatures(_epoch(dataset, 3, 2))) | set(rows) | set(other_rows)
    assert len(every_row) == len(split.records), "the epochs together cover every row, and only those"
    moved = sum(a != b for a, b in zip(rows, other_rows, strict=True))
    assert moved > 0.9 * len(rows), f"another epoch reorders the whole stream, not a few rows ({moved}/{len(rows)})"

    counts = torch.cat([b["object_count"] for b in first])  # (n,)
    in_file_order = torch.tensor([r.object_count for r in split.records], dtype=torch.float32)
    block_runs = [in_file_order[i : i + 16] for i in range(0, len(in_file_order), 16)]
    assert not any(torch.equal(counts[:16], run) for run in block_runs), "rows are shuffled inside blocks"

    captions = {tuple(b["caption_ids"][0].tolist()) for b in first}
    assert len(captions) > 1 and all(b["caption_mask"][:, 0].all() for b in first), "every row has a caption"
