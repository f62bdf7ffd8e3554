"""A validation split that holds training images is trained on and measured on them: the run says so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mmray.config import TrainJob
from mmray.train.driver import prepare_driver_data
from tests.data.coco_files import clean_split
from tests.train.conftest import tiny_job


def test_validation_images_that_are_training_images_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = clean_split(tmp_path / "split", count=8)
    split = {"captions": str(paths.captions), "images": str(paths.images)}
    job = tiny_job(tmp_path, tmp_path / "runs", "shared", epochs=1, batch_size=4)
    job["data"] = {"source": "coco", "train": split, "val": split}
    with caplog.at_level(logging.WARNING, logger="mmray"):
        prepare_driver_data(TrainJob.model_validate(job))
    (warning,) = [r.getMessage() for r in caplog.records if "also in the training split" in r.getMessage()]
    assert "all 8 validation images are also in the training split (image ids 1, 2, 3" in warning
    caplog.clear()
    other = clean_split(tmp_path / "other", count=8)
    job["data"]["val"] = {"captions": str(other.captions), "images": str(other.images)}
    with caplog.at_level(logging.WARNING, logger="mmray"):
        prepare_driver_data(TrainJob.model_validate(job))
    assert not [r for r in caplog.records if "also in the training split" in r.getMessage()]
