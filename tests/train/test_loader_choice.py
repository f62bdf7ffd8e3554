"""`train.loader: auto` keeps a small split in memory and streams a large one (its prepared shards read by
the workers when the job names them, else through Ray Data), except where the job needs its split in memory;
it says in the log which it chose and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from mmray.config import TrainJob
from mmray.errors import ConfigError
from mmray.train import loader_choice
from mmray.train.driver import prepare_driver_data
from tests.support.cli import invoke_mmray
from tests.train.conftest import tiny_job


def _job(data_root: Path, tmp_path: Path, every_caption: bool = False, **train: object) -> TrainJob:
    job = tiny_job(data_root, tmp_path / "runs", "choice", **train)
    if every_caption:
        job["data"]["captions_per_epoch"] = "all"
    return TrainJob.model_validate(job)


def test_auto_keeps_a_small_split_in_memory(data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mmray"):
        data = prepare_driver_data(_job(data_root, tmp_path))
    assert data.spec.train.loader == "memory" and data.train_tensors is not None
    assert "train.loader=auto: memory (480 training images at 64 px, 0.01 GiB decoded, within 2 GiB)" in caplog.text


def test_auto_streams_a_split_over_the_limit(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader_choice, "MEMORY_LOADER_LIMIT_BYTES", 2**20)
    with caplog.at_level(logging.INFO, logger="mmray"):
        streamed = prepare_driver_data(_job(data_root, tmp_path))
        local = prepare_driver_data(_job(data_root, tmp_path), can_stream=False)
    assert streamed.spec.train.loader == "ray_data" and streamed.train_tensors is None
    assert streamed.num_train_examples == 480
    assert "train.loader=auto: ray_data (480 training images" in caplog.text
    assert local.spec.train.loader == "memory" and local.train_tensors is not None
    assert "memory though the split is large" in caplog.text and "a local run has no Ray Data" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmray"):
        every_caption = prepare_driver_data(_job(data_root, tmp_path, every_caption=True))
    assert every_caption.spec.train.loader == "memory"
    assert "data.captions_per_epoch=all packs every caption" in caplog.text


def test_a_stream_the_job_cannot_use_is_refused(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a local run has no Ray Data: use train\.loader=memory \(or auto\), or"):
        prepare_driver_data(_job(data_root, tmp_path, loader="ray_data"), can_stream=False)
    with pytest.raises(ConfigError, match=r"use train\.loader=memory or captions_per_epoch=one"):
        prepare_driver_data(_job(data_root, tmp_path, every_caption=True, loader="ray_data"))


def test_a_procrustes_start_needs_the_split_in_memory(data_root: Path, tmp_path: Path) -> None:
    job = tiny_job(data_root, tmp_path / "runs", "procrustes", loader="ray_data")
    job["model"]["init_projections"] = "procrustes"
    job["model"]["image"]["trainable_blocks"] = job["model"]["text"]["trainable_blocks"] = 0
    with pytest.raises(ConfigError, match=r"init_projections=procrustes computes the heads' start .* use train"):
        prepare_driver_data(TrainJob.model_validate(job))


def test_prepared_shards_are_read_by_the_workers(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tiny_job(data_root, tmp_path / "runs", "choice")
    TrainJob.model_validate(job)  # generates the split
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert invoke_mmray("data", "prepare", str(path), "--shards", str(tmp_path / "shards")).returncode == 0
    prepared = TrainJob.model_validate({**job, "data": {**job["data"], "prepared": str(tmp_path / "shards")}})
    monkeypatch.setattr(loader_choice, "MEMORY_LOADER_LIMIT_BYTES", 2**20)
    with caplog.at_level(logging.INFO, logger="mmray"):
        data = prepare_driver_data(prepared, can_stream=False)  # no Ray Data needed: a local run reads them too
    assert data.spec.train.loader == "shards" and data.train_tensors is None and data.train_records is None
    assert data.train_shards is not None and data.num_train_examples == data.train_shards.num_rows == 480
    assert "train.loader=auto: shards (480 training images" in caplog.text and "read by the workers" in caplog.text

    with pytest.raises(ConfigError, match=r"read by train\.loader=shards .* train\.loader=ray_data decodes the images"):
        prepare_driver_data(
            prepared.model_copy(update={"train": prepared.train.model_copy(update={"loader": "ray_data"})})
        )
    with pytest.raises(ConfigError, match=r"train\.loader=shards reads the split prepared by `mmray data prepare"):
        prepare_driver_data(_job(data_root, tmp_path, loader="shards"))
    every_caption = {**job["data"], "prepared": str(tmp_path / "shards"), "captions_per_epoch": "all"}
    with pytest.raises(
        ConfigError, match=r"train\.loader=shards draws one caption per image, so use train\.loader=memory"
    ):
        prepare_driver_data(
            TrainJob.model_validate({**job, "data": every_caption, "train": {**job["train"], "loader": "shards"}})
        )
