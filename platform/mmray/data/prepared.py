"""A split prepared once: its images decoded and resized by a job's processor, stored as Parquet shards
(`part-NNNNN.parquet`, 16 images each, local or S3) with a manifest written last, so training, its
Tune trials and its reruns read pixels instead of decoding JPEGs again."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from pydantic import TypeAdapter, ValidationError

from mmray import storage
from mmray.config.base import first_problem
from mmray.config.model import LEGACY_ORIENTATION
from mmray.data.coco import CocoDataset
from mmray.data.processor import ImageTransform, Processor
from mmray.data.records import ImageRecord
from mmray.data.tensors import SplitTensors, left_out_unreadable, split_to_tensors
from mmray.errors import DataError, json_object
from mmray.progress import track

logger = logging.getLogger(__name__)

MANIFEST = "prepared.json"
FORMAT = "mmray-prepared-split/1"
ROWS_PER_SHARD = 16
"""Images per shard: few, since a shard's images are always shuffled together (`train.shard_feed`)."""
READ_THREADS = 8
RECORD_COLUMNS = ("image_id", "captions", "labels", "object_count", "covered_fraction")


@dataclass(frozen=True)
class PreparedManifest:
    """What a prepared split holds and what it was made from."""

    format: str
    images: int
    shards: list[str]
    pixels: dict[str, object]
    """What the stored pixels depend on: the processor's image size, resize mode and orientation."""
    records: str
    """`records_fingerprint` of the split's records when prepared."""
    left_out: dict[str, str]
    """image id → why its image could not be read."""
    shard_image_ids: list[list[int]] = field(default_factory=list)
    """Each shard's image ids in row order (empty in splits prepared before it was kept: read from the shards)."""


_MANIFEST_FIELDS = TypeAdapter(PreparedManifest)


def records_fingerprint(records: Sequence[ImageRecord]) -> str:
    """A hash of what the shards hold per image: id, file, captions, labels and targets."""
    digest = hashlib.sha256()
    for r in records:
        key = (r.image_id, r.image_uri, r.captions, r.labels, r.object_count, r.covered_fraction, r.caption_targets)
        digest.update(repr(key).encode())
    return digest.hexdigest()


def pixel_settings(transform: ImageTransform) -> dict[str, object]:
    """What stored pixels depend on; the orientation is left out at the value splits prepared before it had."""
    settings: dict[str, object] = {"size": transform.size, "resize": transform.resize}
    if transform.orientation != LEGACY_ORIENTATION:
        settings["orientation"] = transform.orientation
    return settings


def shard_rows(records: Sequence[ImageRecord], pixels: Sequence[np.ndarray]) -> pa.Table:
    """One shard: per image its id, raw uint8 pixels (3 × S × S bytes), captions and per-image targets."""
    return pa.table(
        {
            "image_id": pa.array([r.image_id for r in records], pa.int64()),
            "image": pa.array([p.tobytes() for p in pixels], pa.binary()),
            "captions": pa.array([list(r.captions) for r in records], pa.list_(pa.string())),
            "labels": pa.array([[float(v) for v in r.labels] for r in records], pa.list_(pa.float32())),
            "object_count": pa.array([float(r.object_count) for r in records], pa.float32()),
            "covered_fraction": pa.array([r.covered_fraction for r in records], pa.float32()),
        }
    )


def prepare_split(
    dataset: CocoDataset, processor: Processor, out: str, seed: int = 0, strict: bool = False
) -> PreparedManifest:
    """Decode and resize every image of `dataset` into shards under `out` (records in an order shuffled
    with `seed`, so each shard mixes the split); unreadable images are reported and left out (`strict`: an
    error). The manifest is written last: a directory without one is an unfinished preparation."""
    if storage.exists(storage.join(out, MANIFEST)):
        raise DataError(f"{out} already holds a prepared split; choose another --out or delete it first")
    order = list(dataset.records)
    random.Random(seed).shuffle(order)
    shards: list[str] = []
    shard_image_ids: list[list[int]] = []
    left_out: dict[str, str] = {}
    chunks = [order[i : i + ROWS_PER_SHARD] for i in range(0, len(order), ROWS_PER_SHARD)]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for chunk in track(chunks, f"preparing {len(order)} images", total=len(chunks)):
            loaded = list(pool.map(lambda r: processor.pixels_or_reason(r.image_uri), chunk))
            good = [(r, p.numpy()) for r, p in zip(chunk, loaded, strict=True) if not isinstance(p, str)]
            left_out.update({str(r.image_id): p for r, p in zip(chunk, loaded, strict=True) if isinstance(p, str)})
            if not good:
                continue
            name = f"part-{len(shards):05d}.parquet"
            with storage.atomic_output(storage.join(out, name)) as staged:
                pq.write_table(shard_rows([r for r, _ in good], [p for _, p in good]), str(staged))
            shards.append(name)
            shard_image_ids.append([r.image_id for r, _ in good])
    left_out_unreadable(list(left_out.items()), len(order), dataset.captions_uri, strict)
    manifest = PreparedManifest(
        FORMAT,
        sum(len(ids) for ids in shard_image_ids),
        shards,
        pixel_settings(processor.image),
        records_fingerprint(dataset.records),
        left_out,
        shard_image_ids,
    )
    storage.write_text(storage.join(out, MANIFEST), json.dumps(asdict(manifest), indent=1))
    return manifest


def read_manifest(uri: str) -> PreparedManifest:
    """The manifest of a prepared split, or a DataError saying what `uri` is instead."""
    path = storage.join(uri, MANIFEST)
    if not storage.exists(path):
        raise DataError(
            f"{uri} holds no prepared split ({MANIFEST} missing: never prepared, or the preparation did not "
            "finish); run `mmray data prepare JOB --shards URI`"
        )
    try:
        content = json_object(storage.read_text(path))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a prepared split's manifest: {exc}") from exc
    if content.get("format") != FORMAT:
        raise DataError(f"{path} has format {content.get('format')!r}; this mmray reads {FORMAT!r}")
    try:
        manifest = _MANIFEST_FIELDS.validate_python(content)
    except ValidationError as exc:
        raise DataError(f"{path} is not a prepared split's manifest ({first_problem(exc)})") from None
    ids = manifest.shard_image_ids
    if ids and len(ids) != len(manifest.shards):
        wrong = f"it lists the image ids of {len(ids)} shards for its {len(manifest.shards)} shards"
    elif ids and sum(map(len, ids)) != manifest.images:
        wrong = f"it says it holds {manifest.images} images; its shards hold {sum(map(len, ids))}"
    else:
        return manifest
    raise DataError(f"{path} is not a prepared split's manifest ({wrong}); prepare the split again")


def check_prepared(manifest: PreparedManifest, uri: str, dataset: CocoDataset, transform: ImageTransform) -> None:
    """Refuse shards made from other records or with other image preprocessing than the job's."""
    if manifest.pixels != pixel_settings(transform):
        raise DataError(
            f"{uri} was prepared with images as {manifest.pixels}; the job needs them as "
            f"{pixel_settings(transform)}: prepare again with this job"
        )
    if manifest.records != records_fingerprint(dataset.records):
        raise DataError(
            f"{uri} was prepared from other records than {dataset.captions_uri} holds now (images, captions or "
            "labels changed): prepare again with this job"
        )


def manifest_fingerprint(manifest: PreparedManifest) -> str:
    """A hash of what a prepared split holds (records, pixel settings, shards)."""
    return hashlib.sha256(json.dumps(asdict(manifest), sort_keys=True).encode()).hexdigest()[:32]


def shard_uris(uri: str, manifest: PreparedManifest) -> list[str]:
    return [storage.absolute_uri(storage.join(uri, name)) for name in manifest.shards]


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """A shard as an Arrow table, or a DataError naming it when it is damaged."""
    try:
        return pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"the prepared shard {uri} cannot be read ({exc}); prepare the split again") from exc


def table_records(table: pa.Table) -> dict[str, np.ndarray]:
    """A shard's record columns as NumPy arrays: image_id (n,), captions (n,) lists, labels (n, K) float32,
    object_count and covered_fraction (n,) float32 (other columns are not read); a ValueError when one holds
    empty values."""
    for name in RECORD_COLUMNS:
        column = table.column(name)
        if column.null_count or (pa.types.is_list(column.type) and pc.list_flatten(column).null_count):
            raise ValueError(f"its column {name} holds empty values")
    labels = table.column("labels").to_pylist()
    return {
        "image_id": np.asarray(table.column("image_id").to_pylist(), dtype=np.int64),
        "captions": np.asarray([list(c) for c in table.column("captions").to_pylist()] + [None], dtype=object)[:-1],
        "labels": np.asarray(labels, dtype=np.float32).reshape(len(labels), -1),
        "object_count": np.asarray(table.column("object_count").to_pylist(), dtype=np.float32),
        "covered_fraction": np.asarray(table.column("covered_fraction").to_pylist(), dtype=np.float32),
    }


PixelLocations = dict[int, tuple[str, int]]
"""image id → (the prepared shard holding its pixels, its row there)."""


def shard_image_ids(uri: str, manifest: PreparedManifest) -> Iterable[list[int]]:
    """Each shard's image ids in row order (from the manifest; older splits' shards are read for them)."""
    if manifest.shard_image_ids:
        return manifest.shard_image_ids
    return (read_table(shard, ["image_id"]).column("image_id").to_pylist() for shard in shard_uris(uri, manifest))


def pixel_locations(uri: str, manifest: PreparedManifest) -> PixelLocations:
    """Where each prepared image's pixels are."""
    return {
        image_id: (shard, row)
        for shard, ids in zip(shard_uris(uri, manifest), shard_image_ids(uri, manifest), strict=True)
        for row, image_id in enumerate(ids)
    }


def shard_pixels(uri: str, size: int) -> list[np.ndarray | str]:
    """A shard's images as uint8 (3, S, S) in row order, or why one is unusable."""
    return [stored_pixels(data, size, uri) for data in read_table(uri, ["image"]).column("image").to_pylist()]


def stored_pixels(data: object, size: int, uri: str) -> np.ndarray | str:
    """One image's stored bytes as uint8 (3, S, S), or why they are not that."""
    if not isinstance(data, bytes):
        return f"its pixels in {uri} are {'missing' if data is None else f'a {type(data).__name__}, not bytes'}"
    if len(data) != 3 * size * size:
        return f"its pixels in {uri} are {len(data)} bytes, not 3 × {size} × {size}"
    return np.frombuffer(data, dtype=np.uint8).reshape(3, size, size)


def prepared_pixels(uri: str, manifest: PreparedManifest, size: int) -> Callable[[ImageRecord], torch.Tensor | str]:
    """Each record's uint8 pixels (3, S, S) from the shards, or why there are none."""
    pixels: dict[int, tuple[object, str]] = {}  # image id → its stored bytes and the shard holding them
    shards = shard_uris(uri, manifest)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        tables = pool.map(lambda shard: read_table(shard, ["image_id", "image"]), shards)
        for shard, table in zip(shards, tables, strict=True):
            images = ((data, shard) for data in table.column("image").to_pylist())
            pixels.update(zip(table.column("image_id").to_pylist(), images, strict=True))

    def lookup(record: ImageRecord) -> torch.Tensor | str:
        if record.image_id not in pixels:
            return manifest.left_out.get(str(record.image_id), f"not in the prepared split {uri}")
        data, shard = pixels[record.image_id]
        found = stored_pixels(data, size, shard)
        return found if isinstance(found, str) else torch.from_numpy(found.copy())

    return lookup


def prepared_split(
    prepared: str, split: str, dataset: CocoDataset, transform: ImageTransform
) -> tuple[str, PreparedManifest]:
    """Where the job's `split` was prepared under `prepared`, and its manifest, checked against the job."""
    uri = storage.join(prepared, split)
    manifest = read_manifest(uri)
    check_prepared(manifest, uri, dataset, transform)
    logger.info("%s: %d images read from the prepared shards at %s", split, manifest.images, uri)
    return uri, manifest


def load_split_tensors(dataset: CocoDataset, processor: Processor, prepared: str | None, split: str) -> SplitTensors:
    """`split_to_tensors` of a split, its pixels from the prepared shards when the job names them."""
    if prepared is None:
        return split_to_tensors(dataset, processor)
    uri, manifest = prepared_split(prepared, split, dataset, processor.image)
    return split_to_tensors(dataset, processor, pixels_of=prepared_pixels(uri, manifest, processor.image.size))
