"""A run refused before training (here: a batch larger than the data) records nothing, so its corrected
rerun starts; a run that recorded its job but never checkpointed says so when a rerun is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray.config import TrainJob, load_job
from mmray.errors import ConfigError
from mmray.train.run_record import JOB_RECORD, check_run_directory
from mmray.train.trainer import start_run
from tests.support.cli import invoke_mmray
from tests.train.conftest import prepare_run, tiny_job, write_job


def _job(shapes: Path, runs: Path) -> dict[str, Any]:
    job = tiny_job(shapes, runs, "refused-first", epochs=1, num_workers=1)
    split = {s: {"captions": str(shapes / f"annotations/captions_{s}.json"), "images": str(shapes / "images" / s)}
             for s in ("train", "val")}  # fmt: skip
    job["data"] = {"source": "coco", **split}
    return job


@pytest.mark.slow
def test_a_run_refused_before_training_does_not_block_its_corrected_rerun(tiny_shapes: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", _job(tiny_shapes, tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "refused-first"
    refused = invoke_mmray("train", str(job), "train.batch_size=4096", "--local")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and "train.batch_size 4096 is larger than the training split" in lines[-1]
    assert not (run_dir / JOB_RECORD).exists(), "a refused run records nothing"

    with pytest.raises(ConfigError, match="larger than the training split"):
        start_run(load_job(job, ["train.batch_size=4096"]))  # the Ray Train path refuses before Ray starts
    assert not (run_dir / JOB_RECORD).exists()

    rerun = invoke_mmray("train", str(job), "train.batch_size=16", "--local")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert yaml.safe_load((run_dir / JOB_RECORD).read_text())["train"]["batch_size"] == 16


def test_a_refused_rerun_of_a_run_without_checkpoints_says_starting_afresh_loses_nothing(
    tiny_shapes: Path, tmp_path: Path
) -> None:
    first = TrainJob.model_validate(_job(tiny_shapes, tmp_path / "runs"))
    prepare_run(first)
    changed = first.model_copy(update={"train": first.train.model_copy(update={"lr": 0.01})})
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 → 0\.01\..*It has no checkpoint yet, so --force-new"):
        check_run_directory(changed)
    checkpoint = tmp_path / "runs" / "refused-first" / "checkpoint_epoch_0001"
    checkpoint.mkdir()
    (checkpoint / "train_state.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 → 0\.01\.") as refused:
        check_run_directory(changed)
    assert "no checkpoint" not in str(refused.value)


def test_resuming_with_another_model_is_refused_before_anything_is_written(tiny_shapes: Path, tmp_path: Path) -> None:
    """--resume continues a run's checkpoints: a changed model section cannot load them. The refusal came only
    once the checkpoint failed to load, after job.yaml was rewritten, which then refused the original job."""
    first = TrainJob.model_validate(_job(tiny_shapes, tmp_path / "runs"))
    prepare_run(first)
    checkpoint = tmp_path / "runs" / "refused-first" / "checkpoint_epoch_0001"
    checkpoint.mkdir()
    (checkpoint / "train_state.pt").write_bytes(b"x")
    record = (tmp_path / "runs" / "refused-first" / JOB_RECORD).read_text()
    wider = first.model_copy(update={"model": first.model.model_copy(update={"embed_dim": 64})})
    with pytest.raises(ConfigError, match=r"--resume cannot change the model \(model\.embed_dim: 32 → 64\)"):
        check_run_directory(wider, rerun="resume")
    assert (tmp_path / "runs" / "refused-first" / JOB_RECORD).read_text() == record
    faster = first.model_copy(update={"train": first.train.model_copy(update={"lr": 0.01})})
    check_run_directory(faster, rerun="resume")  # training settings may change


def test_a_storage_root_that_is_a_file_is_refused_before_the_data_loads(tiny_shapes: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a directory")
    job = TrainJob.model_validate(_job(tiny_shapes, tmp_path / "notes.txt"))
    with pytest.raises(ConfigError, match=r"storage_root .*notes\.txt is a file; name a directory"):
        check_run_directory(job)
