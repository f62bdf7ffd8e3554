"""`mmray data prepare JOB --shards URI` decodes and resizes a job's splits once into Parquet shards (local or
S3), the manifest last; a job with `data.prepared=URI` reads their pixels (the same as decoding the images)
and refuses shards made for other images or other preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from mmray import storage
from mmray.config import TrainJob
from mmray.data.prepared import FORMAT, MANIFEST, PreparedManifest, pixel_locations, prepared_pixels, read_manifest
from mmray.data.processor import ImageTransform, Processor
from mmray.data.records import ImageRecord
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import DataError
from mmray.retrieval.embed import DecodeImages
from mmray.train.driver import prepare_driver_data
from mmray.train.shard_feed import shard_batches
from tests.support.cli import invoke_mmray
from tests.train.conftest import tiny_job

TRAIN_IMAGES, VAL_IMAGES = 150, 30


def _job(data_root: Path, storage_root: str, **data: Any) -> dict[str, Any]:
    job = tiny_job(data_root, storage_root, "prepared", num_workers=1)
    job["data"].update({"images": TRAIN_IMAGES + VAL_IMAGES, "val_images": VAL_IMAGES, "seed": 3, **data})
    return job


def _write(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def _by_id(tensors: Any) -> dict[int, torch.Tensor]:
    return {int(i): image for i, image in zip(tensors.image_ids, tensors.images, strict=True)}


def test_prepared_shards_give_the_decoded_pixels_and_are_written_once(tmp_path: Path) -> None:
    data_root, shards = tmp_path / "data", str(tmp_path / "prepared")
    job = _write(tmp_path / "job.yaml", _job(data_root, str(tmp_path / "runs")))
    prepared = invoke_mmray("data", "prepare", str(job), "--shards", shards)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    written = prepared.last_json()
    assert written["train"]["prepared"] == {"uri": f"{shards}/train", "images": TRAIN_IMAGES, "shards": 10,
                                            "left_out": 0}  # fmt: skip
    assert written["val"]["prepared"]["images"] == VAL_IMAGES
    assert f"data.prepared={shards}" in prepared.stderr
    manifest = read_manifest(f"{shards}/train")
    assert manifest.pixels == {"size": 64, "resize": "stretch", "orientation": "exif"} and len(manifest.shards) == 10

    decoded = prepare_driver_data(TrainJob.model_validate(_job(data_root, str(tmp_path / "runs"))))
    from_shards = prepare_driver_data(TrainJob.model_validate(_job(data_root, str(tmp_path / "runs"), prepared=shards)))
    for split in ("train_tensors", "val_tensors"):
        expected, got = _by_id(getattr(decoded, split)), _by_id(getattr(from_shards, split))
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[i], got[i]) for i in expected), f"{split}: the decoded pixels"

    again = invoke_mmray("data", "prepare", str(job), "--shards", shards)
    assert again.returncode == 2 and "already holds a prepared split" in again.stderr


def test_shards_for_other_images_or_preprocessing_or_damaged_are_refused(tmp_path: Path) -> None:
    data_root, shards = tmp_path / "data", str(tmp_path / "prepared")
    job = _job(data_root, str(tmp_path / "runs"))
    assert invoke_mmray("data", "prepare", str(_write(tmp_path / "job.yaml", job)), "--shards", shards).returncode == 0

    bigger = _job(data_root, str(tmp_path / "runs"), prepared=shards)
    bigger["model"]["image"]["image_size"] = 96
    with pytest.raises(
        DataError,
        match=r"prepared with images as \{'size': 64, 'resize': 'stretch', 'orientation': "
        r"'exif'\}; the job needs them as \{'size': 96, ",
    ):
        prepare_driver_data(TrainJob.model_validate(bigger))
    as_stored = _job(data_root, str(tmp_path / "runs"), prepared=shards)
    as_stored["model"]["image"]["orientation"] = "stored"
    with pytest.raises(DataError, match=r"'resize': 'stretch'\}: prepare again"):
        prepare_driver_data(TrainJob.model_validate(as_stored))
    other_data = _job(data_root, str(tmp_path / "runs"), prepared=shards, seed=4)
    with pytest.raises(DataError, match="prepared from other records"):
        prepare_driver_data(TrainJob.model_validate(other_data))

    shard = Path(shards, "val", "part-00000.parquet")
    shard.write_bytes(shard.read_bytes()[:300])  # cut short
    with pytest.raises(DataError, match=r"the prepared shard .*part-00000.parquet cannot be read .*prepare the split"):
        prepare_driver_data(TrainJob.model_validate(_job(data_root, str(tmp_path / "runs"), prepared=shards)))

    Path(shards, "train", MANIFEST).unlink()  # as a preparation stopped before its end leaves it
    with pytest.raises(DataError, match="the preparation did not finish"):
        prepare_driver_data(TrainJob.model_validate(_job(data_root, str(tmp_path / "runs"), prepared=shards)))


def test_a_damaged_image_is_reported_and_left_out_or_refused(tmp_path: Path, s3_env: str) -> None:
    data_root = tmp_path / "data"
    job = _job(data_root, str(tmp_path / "runs"), image_check="none")
    path = _write(tmp_path / "job.yaml", job)
    assert invoke_mmray("data", "prepare", str(path)).returncode == 0  # the shapes data generated
    victim = sorted(data_root.glob("*/images/train/*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:200])

    strict = invoke_mmray("data", "prepare", str(path), "data.on_bad_record=error", "--shards", f"{s3_env}/strict")
    assert strict.returncode == 2 and "1 images could not be read (data.on_bad_record=error)" in strict.stderr
    assert not storage.exists(f"{s3_env}/strict/train/{MANIFEST}"), "no manifest: never taken as complete"

    shards = f"{s3_env}/prepared"
    lenient = invoke_mmray("data", "prepare", str(path), "--shards", shards)
    assert lenient.returncode == 0, lenient.stderr[-2000:]
    assert "1 images could not be read and are left out" in lenient.stderr
    assert lenient.last_json()["train"]["prepared"]["left_out"] == 1
    manifest = json.loads(storage.read_text(f"{shards}/train/{MANIFEST}"))
    assert manifest["images"] == TRAIN_IMAGES - 1 and len(manifest["left_out"]) == 1
    loaded = prepare_driver_data(TrainJob.model_validate({**job, "data": {**job["data"], "prepared": shards}}))
    assert loaded.train_tensors is not None and loaded.train_tensors.num_images == TRAIN_IMAGES - 1

    streamed_job = {**job, "data": {**job["data"], "prepared": shards}, "train": {**job["train"], "loader": "shards"}}
    streamed = prepare_driver_data(TrainJob.model_validate(streamed_job))
    assert streamed.train_shards is not None and streamed.train_shards.uris[0].startswith("s3://")
    fields, batch = ("images", "caption_ids", "caption_mask"), 16
    steps = (TRAIN_IMAGES - 1) // batch
    batches = list(shard_batches(streamed.train_shards, streamed.processor, fields, batch, steps, 0, 0, 0, 1))
    assert len(batches) == steps and all(b["images"].shape == (batch, 3, 64, 64) for b in batches)
    assert all(b["images"].flatten(1).float().std(1).min() > 0 for b in batches), "real pixels, read from S3"


@pytest.mark.parametrize(
    ("edit", "wrong"),
    [
        ({"shards": "part-00000.parquet"}, r"shards: Input should be a valid list"),
        ({"shards": None}, r"shards: Input should be a valid list"),
        ({"left_out": ["7"]}, r"left_out: Input should be a valid dictionary"),
        ({"shard_image_ids": [1, 3]}, r"shard_image_ids\.0: Input should be a valid list"),
        ({"shard_image_ids": [[1, 2]]}, r"lists the image ids of 1 shards for its 2 shards"),
        ({"images": 5}, r"says it holds 5 images; its shards hold 3"),
    ],
)
def test_an_edited_manifest_is_refused_naming_it(tmp_path: Path, edit: dict[str, Any], wrong: str) -> None:
    manifest = {"format": FORMAT, "images": 3, "shards": ["part-00000.parquet", "part-00001.parquet"],
                "pixels": {"size": 64, "resize": "stretch"}, "records": "0" * 64, "left_out": {"7": "unreadable"},
                "shard_image_ids": [[1, 2], [3]]}  # fmt: skip
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert pixel_locations(str(tmp_path), read_manifest(str(tmp_path)))[3] == (f"{tmp_path}/part-00001.parquet", 0)
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, **edit}))
    with pytest.raises(DataError, match=rf"{tmp_path}/{MANIFEST} is not a prepared split's manifest.*{wrong}"):
        read_manifest(str(tmp_path))


def test_an_image_missing_from_its_shard_is_reported_by_the_index_and_the_memory_loader(tmp_path: Path) -> None:
    size, shard = 8, tmp_path / "part-00000.parquet"
    stored = np.arange(3 * size * size, dtype=np.uint8)
    images = pa.array([stored.tobytes(), None, b"\x00" * 5], pa.binary())
    pq.write_table(pa.table({"image_id": pa.array([1, 2, 3], pa.int64()), "image": images}), shard)
    processor = Processor(ImageTransform(size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), WordTokenizer.build(["a"], 4))

    batch = {"id": np.array([1, 2, 3]), "uri": np.array(["", "", ""], dtype=object),
             "pixels_from": np.array([str(shard)] * 3, dtype=object), "pixels_row": np.array([0, 1, 2])}  # fmt: skip
    decoded = DecodeImages(processor)(batch)
    assert decoded["error"][0] == "" and np.array_equal(decoded["pixels"][0].ravel(), stored)
    assert decoded["error"][1] == f"its pixels in {shard} are missing"
    assert decoded["error"][2] == f"its pixels in {shard} are 5 bytes, not 3 × 8 × 8"

    manifest = PreparedManifest(FORMAT, 3, [shard.name], {}, "", {})
    lookup = prepared_pixels(str(tmp_path), manifest, size)
    record = ImageRecord(2, "2.jpg", "2.jpg", size, size, ("a",), (1,), (), (), (), 0, 0.0)
    assert lookup(record) == f"its pixels in {shard} are missing"
