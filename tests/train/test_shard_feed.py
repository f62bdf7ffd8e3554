"""`train.loader: shards`: each worker reads its share of the prepared split itself. Every epoch covers
each image at most once across the ranks, in a new order reproducible from (seed, epoch) whose in-batch pairs
repeat about as often as two random shuffles'; each batch carries its images' stored pixels and one of their
captions, or frozen towers' features computed once in their place; a damaged shard stops the run with an
error naming it."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmray.config import TrainJob
from mmray.data.prepared import manifest_fingerprint, prepare_split, shard_image_ids, shard_uris
from mmray.data.processor import Processor
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES
from mmray.errors import DataError
from mmray.models.registry import build_processor
from mmray.tasks.base import EvalContext
from mmray.tasks.registry import task_class
from mmray.train.feature_shards import feature_shards
from mmray.train.row_pool import RowPool, pooled_batches
from mmray.train.shard_feed import PreparedShards, rank_spans, shard_batches
from tests.train.conftest import tiny_job

FIELDS = ("images", "caption_ids", "caption_mask", "labels")
WORLD, LOCAL_BATCH = 2, 16


@pytest.fixture(scope="module")
def prepared(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PreparedShards, Processor, dict]:
    """The tiny job's 480 training images prepared as shards, its processor, and per image (keyed by its
    pixels' hash) the token ids of each of its captions."""
    spec = TrainJob.model_validate(tiny_job(data_root, tmp_path_factory.mktemp("runs"), "shards"))
    resolve_splits(spec.data)
    train = load_split(spec.data, "train")
    processor = build_processor(spec.model, [c for r in train.records for c in r.captions])
    out = str(tmp_path_factory.mktemp("prepared"))
    manifest = prepare_split(train, processor, out)
    rows = [len(ids) for ids in shard_image_ids(out, manifest)]
    shards = PreparedShards(shard_uris(out, manifest), rows, manifest_fingerprint(manifest))
    captions = {}
    for record in train.records:
        pixels = processor.array_from_uri(record.image_uri)
        tokens = processor.tokenize(list(record.captions)).ids
        captions[hashlib.sha1(pixels.tobytes()).hexdigest()] = {tuple(row.tolist()) for row in tokens}
    return shards, processor, captions


def _epoch(shards: PreparedShards, processor: Processor, epoch: int, **options: int) -> list[list[dict]]:
    """Every rank's batches of an epoch (per rank, in order)."""
    steps = shards.num_rows // (WORLD * LOCAL_BATCH)
    return [
        list(shard_batches(shards, processor, FIELDS, LOCAL_BATCH, steps, 0, epoch, rank, WORLD, **options))
        for rank in range(WORLD)
    ]


def _keys(batch: dict) -> list[str]:
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch["images"]]


def _pairs(epoch: list[list[dict]]) -> set[frozenset[str]]:
    return {frozenset(pair) for rank in epoch for batch in rank for pair in itertools.combinations(_keys(batch), 2)}


def test_the_ranks_share_every_row_of_an_epoch_once() -> None:
    rows = [64, 64, 64, 17, 64]
    for epoch in range(3):
        spans = [rank_spans(rows, 5, epoch, rank, 3) for rank in range(3)]
        taken = sorted((s.shard, row) for share in spans for s in share for row in range(s.start, s.stop))
        assert taken == sorted((shard, row) for shard, n in enumerate(rows) for row in range(n))
        assert [sum(s.stop - s.start for s in share) for share in spans] == [91, 91, 91]
    assert rank_spans(rows, 5, 1, 0, 3) == rank_spans(rows, 5, 1, 0, 3)
    assert rank_spans(rows, 5, 1, 0, 1) != rank_spans(rows, 5, 2, 0, 1), "another epoch, another shard order"


def test_the_pool_draws_each_row_once_and_only_rows_already_read() -> None:
    reads = [{"image_id": np.arange(start, start + 16)} for start in range(0, 160, 16)]
    pulled: list[int] = []

    def tracked() -> Iterator[dict[str, np.ndarray]]:
        for rows in reads:
            pulled.append(int(rows["image_id"][-1]))
            yield rows

    generator = torch.Generator().manual_seed(0)
    drawn = []
    for batch in pooled_batches(tracked(), 32, 64, 8, 100, generator):
        assert batch["image_id"].max() <= pulled[-1], "drawn from what was read"
        drawn.append(batch["image_id"])
    assert [len(b) for b in drawn] == [8] * 20 and sorted(np.concatenate(drawn)) == list(range(160))
    assert pulled[:2] == [15, 31] and len(drawn[0]) == 8, "two shards read before the first batch"
    assert set(drawn[0]) <= set(range(32))

    pool = RowPool()
    pool.add({"image_id": np.arange(5), "captions": np.asarray([["a"]] * 5 + [None], dtype=object)[:-1]})
    taken = pool.take(3, torch.Generator().manual_seed(1))
    held = pool.arrays["image_id"][: pool.count]
    assert pool.count == 2 and sorted([*taken["image_id"], *held]) == list(range(5))
    assert list(pool.arrays["captions"][2:5]) == [None] * 3, "no references kept to rows given out"


@pytest.mark.parametrize("pool_bytes", [None, 128 * 3 * 64 * 64], ids=["default pool", "128-image pool"])
def test_an_epoch_gives_each_image_once_with_one_of_its_captions(prepared: tuple, pool_bytes: int | None) -> None:
    shards, processor, captions = prepared
    options = {} if pool_bytes is None else {"pool_bytes": pool_bytes}
    epoch = _epoch(shards, processor, 0, **options)
    assert [len(rank) for rank in epoch] == [15, 15], "480 images in global batches of 32"
    seen = [key for rank in epoch for batch in rank for key in _keys(batch)]
    assert len(seen) == len(set(seen)) == 480 and set(seen) == set(captions)
    for batch in (b for rank in epoch for b in rank):
        assert batch["images"].shape == (LOCAL_BATCH, 3, 64, 64) and batch["images"].dtype == torch.uint8
        assert batch["caption_mask"].shape == batch["caption_ids"].shape and batch["labels"].shape[0] == LOCAL_BATCH
        for key, ids in zip(_keys(batch), batch["caption_ids"], strict=True):
            assert tuple(ids.tolist()) in captions[key], "a caption of the image itself"
    again = _epoch(shards, processor, 0, **options)
    assert all(torch.equal(a["caption_ids"], b["caption_ids"]) for a, b in zip(epoch[0], again[0], strict=True))
    assert [_keys(b) for b in epoch[1]] == [_keys(b) for b in again[1]], "the same (seed, epoch), the same batches"


def test_two_epochs_share_about_as_many_in_batch_pairs_as_two_random_shuffles(prepared: tuple) -> None:
    shards, processor, _ = prepared
    first, second = _pairs(_epoch(shards, processor, 0)), _pairs(_epoch(shards, processor, 1))
    repeated = len(first & second)
    generator = torch.Generator().manual_seed(0)
    chance = []
    for _ in range(20):
        orders = [torch.randperm(480, generator=generator).view(-1, LOCAL_BATCH).tolist() for _ in range(2)]
        pairs = [{frozenset(p) for batch in order for p in itertools.combinations(batch, 2)} for order in orders]
        chance.append(len(pairs[0] & pairs[1]))
    expected = sum(chance) / len(chance)
    assert repeated < 1.5 * expected, (repeated, expected)


def test_a_damaged_shard_is_named(prepared: tuple, tmp_path: Path) -> None:
    shards, processor, _ = prepared
    damaged = tmp_path / "part-00000.parquet"
    damaged.write_bytes(Path(shards.uris[0]).read_bytes()[:-200])
    broken = PreparedShards([str(damaged), *shards.uris[1:]], shards.rows, "damaged")
    with pytest.raises(DataError, match=r"the prepared shard .*part-00000.parquet cannot be read .*prepare the split"):
        for rank in range(WORLD):
            list(shard_batches(broken, processor, FIELDS, LOCAL_BATCH, 15, 0, 0, rank, WORLD))
    table = pq.read_table(shards.uris[0])
    cut = pa.array([data[:-1] for data in table.column("image").to_pylist()], pa.binary())
    pq.write_table(table.set_column(table.column_names.index("image"), "image", cut), damaged)
    with pytest.raises(DataError, match=r"an image of the prepared shard .* is damaged \(its pixels are 12287 bytes"):
        for rank in range(WORLD):
            list(shard_batches(broken, processor, FIELDS, LOCAL_BATCH, 15, 0, 0, rank, WORLD))
    short = PreparedShards(shards.uris, [shards.rows[0] + 5, *shards.rows[1:]], "short")
    with pytest.raises(DataError, match=r"holds fewer rows than its manifest says"):
        for rank in range(WORLD):
            list(shard_batches(short, processor, FIELDS, LOCAL_BATCH, 15, 0, 0, rank, WORLD))


def _nulls(table: pa.Table, name: str) -> pa.Table:
    """`table` with every value of its column `name` empty."""
    empty = pa.nulls(table.num_rows, table.schema.field(name).type)
    return table.set_column(table.column_names.index(name), name, empty)


@pytest.mark.parametrize(
    "edit",
    [
        lambda table: table.drop_columns(["labels"]),  # another Parquet file in the shard's place
        lambda table: table.drop_columns(["image"]),
        lambda table: _nulls(table, "captions"),
        lambda table: _nulls(table, "object_count"),
        lambda table: table.set_column(
            table.column_names.index("labels"), "labels", pa.array([[1.0]] + [[0.0, 1.0]] * (table.num_rows - 1))
        ),
    ],
    ids=["other_columns", "no_pixels", "no_captions", "no_object_count", "ragged_labels"],
)
def test_a_shard_of_other_columns_is_named(prepared: tuple, tmp_path: Path, edit: Any) -> None:
    shards, processor, _ = prepared
    edited = tmp_path / "part-00000.parquet"
    pq.write_table(edit(pq.read_table(shards.uris[0])), edited)
    broken = PreparedShards([str(edited), *shards.uris[1:]], shards.rows, "edited")
    with pytest.raises(DataError, match=rf"^the prepared shard {edited} is damaged or not what mmray wrote"):
        for rank in range(WORLD):
            list(shard_batches(broken, processor, FIELDS, LOCAL_BATCH, 15, 0, 0, rank, WORLD))


def test_shards_rewritten_with_large_binary_images_read_alike(prepared: tuple, tmp_path: Path) -> None:
    """A shard another tool rewrote (pyarrow's large_binary: 64-bit offsets) holds the same images."""
    shards, processor, _ = prepared
    rewritten = []
    for index, uri in enumerate(shards.uris):
        table = pq.read_table(uri)
        large = table.column("image").cast(pa.large_binary())
        rewritten.append(str(tmp_path / f"part-{index:05d}.parquet"))
        pq.write_table(table.set_column(table.column_names.index("image"), "image", large), rewritten[-1])
    large_shards = PreparedShards(rewritten, shards.rows, "large")
    for before, after in zip(_epoch(shards, processor, 0), _epoch(large_shards, processor, 0), strict=True):
        assert [_keys(batch) for batch in before] == [_keys(batch) for batch in after]


def test_frozen_towers_features_are_computed_once_and_streamed_in_place_of_their_inputs(
    prepared: tuple, data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shards, processor, _ = prepared
    job = tiny_job(data_root, tmp_path, "frozen")
    job["model"]["image"]["trainable_blocks"] = job["model"]["text"]["trainable_blocks"] = 0
    spec = TrainJob.model_validate(job)
    task = task_class("retrieval")(spec.task, spec.model, processor)
    model = task.build_model().eval()
    towers = task.frozen_towers(model)
    assert towers is not None and towers.images is not None and towers.captions is not None
    with caplog.at_level(logging.INFO, logger="mmray"):
        context = EvalContext(0, 1, torch.device("cpu"), 64, processor)
        features = feature_shards(shards, towers, context, str(tmp_path))
        again = feature_shards(shards, towers, context, str(tmp_path))
    assert "frozen image and caption features of 480 images computed once" in caplog.text
    assert "frozen image and caption features of 480 images read from" in caplog.text and again == features
    fields = (IMAGE_FEATURES, TEXT_FEATURES)
    for rank in range(WORLD):
        inputs = shard_batches(shards, processor, FIELDS, LOCAL_BATCH, 15, 0, 1, rank, WORLD)
        encoded = shard_batches(features, processor, fields, LOCAL_BATCH, 15, 0, 1, rank, WORLD)
        for raw, batch in zip(inputs, encoded, strict=True):
            assert set(batch) == set(fields), "no pixels, no tokens"
            with torch.no_grad():
                images = towers.images(processor.normalize(raw["images"]))  # (b, D)
                texts = towers.captions(raw["caption_ids"], raw["caption_mask"].bool())  # (b, D)
            torch.testing.assert_close(batch[IMAGE_FEATURES], images, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(batch[TEXT_FEATURES], texts, rtol=1e-4, atol=1e-5)
