"""A run's outputs: metrics.json holds the final summary and every epoch's metrics; a finished run is
recognised from its files before any data, model or Ray is touched (trained in this process: `run_local`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray.config import TrainJob
from mmray.train.local_run import run_local
from tests.support.cli import invoke_mmray, ray_never_started


def _job(data: Path, runs: Path) -> dict[str, Any]:
    return {
        "kind": "train",
        "name": "outputs",
        "storage_root": str(runs),
        "data": {"source": "shapes", "root": str(data), "images": 160, "val_images": 40, "seed": 7},
        "model": {
            "kind": "dual_encoder",
            "embed_dim": 16,
            "image": {"kind": "small_cnn", "width": 8, "blocks": 3},
            "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "max_length": 40},
        },
        "task": {"kind": "retrieval"},
        "train": {"epochs": 2, "batch_size": 40, "eval_batch_size": 40, "log_every_steps": 50},
    }


@pytest.fixture(scope="module")
def finished_run(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    runs = tmp_path_factory.mktemp("runs")
    job = _job(tiny_shapes, runs)
    outcome = run_local(TrainJob.model_validate(job))
    path = runs / "outputs.yaml"
    path.write_text(yaml.safe_dump(job))
    return path, outcome.summary()


def test_metrics_json_holds_the_final_summary_and_every_epoch(finished_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = finished_run
    run_dir = Path(summary["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics.pop("history")
    assert metrics == json.loads(json.dumps(summary)), "the final line's object"
    assert [epoch["epoch"] for epoch in history] == [1, 2]
    assert all("train_loss" in epoch and "recall_mean" in epoch for epoch in history)
    assert history[-1] == {k: v for k, v in metrics.items() if k in history[-1]}
    checkpoint = json.loads((run_dir / "checkpoint_epoch_0002" / "history.json").read_text())
    assert history == json.loads(json.dumps(checkpoint)), "the same history the last checkpoint holds"


def test_a_finished_run_is_recognised_before_ray_starts(finished_run: tuple[Path, dict[str, Any]]) -> None:
    job, summary = finished_run
    for flags in ((), ("--local",), ("train.eval_every=2",)):
        with ray_never_started() as calls:
            again = invoke_mmray("train", str(job), *flags)
        assert again.returncode == 0 and not calls, again.stderr[-2000:]
        assert "run outputs is finished: 2 epochs trained, train.epochs=2" in again.stderr
        assert again.last_json() == json.loads(json.dumps(summary))
    changed = invoke_mmray("train", str(job), "train.lr=0.01", "--local")
    assert changed.returncode == 2 and "other settings: train.lr" in changed.stderr, "not finished: refused"


def test_a_run_recorded_before_a_key_existed_is_the_same_job(finished_run: tuple[Path, dict[str, Any]]) -> None:
    job, summary = finished_run
    record = Path(summary["run_dir"]) / "job.yaml"
    recorded = yaml.safe_load(record.read_text())
    del recorded["data"]["merge_duplicate_files"], recorded["train"]["eval_every"]
    record.write_text(yaml.safe_dump(recorded))
    again = invoke_mmray("train", str(job), "--local")
    assert again.returncode == 0 and "run outputs is finished" in again.stderr, again.stderr[-2000:]
    other = invoke_mmray("train", str(job), "data.merge_duplicate_files=true", "--local")
    assert other.returncode == 2 and "data.merge_duplicate_files: False → True" in other.stderr


def test_more_epochs_train_on_and_extend_the_history(finished_run: tuple[Path, dict[str, Any]]) -> None:
    job, summary = finished_run
    longer = invoke_mmray("train", str(job), "train.epochs=3", "--local")
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "is finished" not in longer.stderr and longer.last_json()["epoch"] == 3
    history = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())["history"]
    assert [epoch["epoch"] for epoch in history] == [1, 2, 3]
