"""Frozen towers' features for a prepared split read by the workers (`train.loader: shards`): computed once by the
ranks together and kept under the storage root's `feature-cache/` as shards of their own (the rows with the towers'
features in place of their inputs), read by the shard feed and by later runs of the same towers on the same split."""

from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmray import storage
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES
from mmray.distributed import gather_objects, shard_range
from mmray.tasks.base import EvalContext
from mmray.tasks.feature_cache import CACHE_DIR, FrozenTowers, decided_by_rank_zero
from mmray.train.row_pool import Rows
from mmray.train.shard_feed import PreparedShards, Span, read_span

logger = logging.getLogger(__name__)

MANIFEST = "features.json"


def _vectors(features: torch.Tensor) -> list[bytes]:
    """Each row of (n, D) features as float32 bytes."""
    return [row.tobytes() for row in features.float().cpu().numpy()]


@torch.no_grad()
def encoded_rows(rows: Rows, towers: FrozenTowers, context: EvalContext) -> Rows:
    """`rows` with the frozen towers' features in place of their inputs: `image_features` (n,) bytes of D
    float32 for a frozen image tower (pixels dropped), `text_features` (n,) lists of such bytes, one per
    caption, for a frozen text tower (captions kept: the feed draws among them)."""
    encoded, device, batch = dict(rows), context.device, context.batch_size
    if towers.images is not None:
        pixels = torch.from_numpy(encoded.pop("image"))  # (n, 3, S, S) uint8
        pieces = [
            towers.images(context.normalized_images(pixels[start : start + batch]))
            for start in range(0, pixels.shape[0], batch)
        ]
        encoded[IMAGE_FEATURES] = np.asarray([*_vectors(torch.cat(pieces)), None], dtype=object)[:-1]
    if towers.captions is not None:
        texts = [str(text) for captions in rows["captions"] for text in captions]
        tokens = context.processor.tokenize(texts)
        pieces = [
            towers.captions(tokens.ids[start : start + batch].to(device), tokens.mask[start : start + batch].to(device))
            for start in range(0, len(texts), batch)
        ]
        features = torch.cat(pieces).float().cpu()  # (sum c_i, D)
        per_row = [_vectors(part) for part in torch.split(features, [len(captions) for captions in rows["captions"]])]
        encoded[TEXT_FEATURES] = np.asarray([*per_row, None], dtype=object)[:-1]
    return encoded


def rows_table(rows: Rows) -> pa.Table:
    """Rows as a shard: the record columns, and whichever of pixels and features they hold."""
    columns = {
        "image_id": pa.array(rows["image_id"].tolist(), pa.int64()),
        "captions": pa.array([list(c) for c in rows["captions"]], pa.list_(pa.string())),
        "labels": pa.array(rows["labels"].tolist(), pa.list_(pa.float32())),
        "object_count": pa.array(rows["object_count"].tolist(), pa.float32()),
        "covered_fraction": pa.array(rows["covered_fraction"].tolist(), pa.float32()),
    }
    if "image" in rows:
        columns["image"] = pa.array([pixels.tobytes() for pixels in rows["image"]], pa.binary())
    if IMAGE_FEATURES in rows:
        columns[IMAGE_FEATURES] = pa.array(list(rows[IMAGE_FEATURES]), pa.binary())
    if TEXT_FEATURES in rows:
        columns[TEXT_FEATURES] = pa.array([list(v) for v in rows[TEXT_FEATURES]], pa.list_(pa.binary()))
    return pa.table(columns)


def feature_shards(
    shards: PreparedShards, towers: FrozenTowers, context: EvalContext, cache_root: str
) -> PreparedShards:
    """The split's shards with the towers' features: read from the cache, or computed by the ranks together
    (each its share of the shards, in batches of `context.batch_size`), the manifest written by rank 0 last."""
    rank = context.rank
    key = hashlib.sha256(f"{towers.key}|{shards.fingerprint}".encode()).hexdigest()[:32]
    where = storage.absolute_uri(storage.join(cache_root, CACHE_DIR, f"shards-{key}"))
    uris = [storage.join(where, f"part-{index:05d}.parquet") for index in range(len(shards.uris))]
    cached = PreparedShards(uris, shards.rows, f"features-{key}")
    what = " and ".join(name for name, tower in (("image", towers.images), ("caption", towers.captions)) if tower)
    if decided_by_rank_zero(storage.exists(storage.join(where, MANIFEST)) if rank == 0 else False):
        if rank == 0:
            logger.info("[mmray] train: frozen %s features of %d images read from %s", what, shards.num_rows, where)
        return cached
    for index in shard_range(len(shards.uris), rank, context.world):
        rows = read_span(shards.uris[index], Span(index, 0, shards.rows[index]), context.processor.image.size)
        buffer = io.BytesIO()
        pq.write_table(rows_table(encoded_rows(rows, towers, context)), buffer)
        storage.write_bytes(uris[index], buffer.getvalue())
    gather_objects(rank)  # every rank's shards are written
    if rank == 0:
        storage.write_text(storage.join(where, MANIFEST), json.dumps({"images": shards.num_rows, "shards": uris}))
        logger.info(
            "[mmray] train: frozen %s features of %d images computed once, kept at %s", what, shards.num_rows, where
        )
    return cached
