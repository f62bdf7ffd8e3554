"""The training loop drives any registered task: a test-only linear probe, through Ray Train (joined to the
session's Ray) and in one process (`run_local`), which rank and keep checkpoints alike."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mmray.config import TrainJob
from mmray.errors import TrainingError
from mmray.train.driver import TrainOutcome
from mmray.train.local_run import run_local
from tests.support.probe_task import ProbeModelConfig, ProbeTaskConfig

pytestmark = pytest.mark.slow


def probe_job(data_root: Path, runs: Path, name: str, epochs: int, eval_every: int) -> TrainJob:
    return TrainJob(
        kind="train",
        name=name,
        storage_root=str(runs),
        data={"source": "shapes", "root": str(data_root), "images": 576, "val_images": 96, "seed": 1},
        model=ProbeModelConfig(),
        task=ProbeTaskConfig(scores=(0.9, 0.5)),
        train={
            "epochs": epochs,
            "batch_size": 32,
            "lr": 0.01,
            "num_workers": 2,
            "eval_every": eval_every,
            "log_every_steps": 5,
            "checkpoint": {"num_to_keep": 2},
        },
    )


def _train(spec: TrainJob, runner: str, request: pytest.FixtureRequest) -> TrainOutcome:
    if runner == "local":
        return run_local(spec)
    request.getfixturevalue("ray_session")
    from mmray.train.trainer import run_training

    return run_training(spec)


@pytest.mark.parametrize("runner", ["ray_train", "local"])
def test_loop_trains_a_task_it_does_not_know_and_ranks_only_measured_scores(
    runner: str, data_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    outcome = _train(probe_job(data_root, tmp_path / "runs", "probe", epochs=4, eval_every=2), runner, request)

    history = outcome.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"], "the probe learns the object count"
    assert "train_count_mae" in history[0], "a task's step logs reach the history"
    measured = [h["epoch"] for h in history if "probe_score" in h]
    assert measured == [2, 4], "epochs without an evaluation carry no score"
    assert [h["checkpoint_score"] for h in history if h["epoch"] in (2, 4)] == [0.9, 0.5]
    assert all(math.isnan(h["checkpoint_score"]) for h in history if h["epoch"] in (1, 3))

    run_dir = tmp_path / "runs" / "probe"
    assert Path(outcome.model_bundle) == run_dir / "checkpoint_epoch_0002", "best: the best measured score"
    assert Path(outcome.latest_bundle) == run_dir / "checkpoint_epoch_0004"
    assert sorted(p.name for p in run_dir.glob("checkpoint_epoch_*")) == [
        "checkpoint_epoch_0002",
        "checkpoint_epoch_0004",
    ], "unmeasured epochs rank last and are dropped first"
    assert json.loads((run_dir / "best_model.json").read_text())["model_bundle"] == outcome.model_bundle
    assert json.loads((run_dir / "latest_model.json").read_text())["model_bundle"] == outcome.latest_bundle


def test_a_worker_error_past_the_retries_is_a_training_error_naming_it(
    data_root: Path, tmp_path: Path, ray_session: None
) -> None:
    """Ray Train raises its own WorkerGroupError, holding each rank's traceback, once the retries are used up;
    the run raises a `TrainingError` (one line in the CLI, exit 1) that names the run and the worker's error."""
    from mmray.train.trainer import run_training

    probe = probe_job(data_root, tmp_path / "runs", "failing", epochs=1, eval_every=1)
    train = probe.train.model_copy(update={"max_failures": 0})
    spec = probe.model_copy(update={"task": ProbeTaskConfig(fails=True), "train": train})
    with pytest.raises(TrainingError) as failed:
        run_training(spec)
    message = str(failed.value)
    assert message.startswith("training run failing failed: ") and "\n" not in message, message
    assert message.endswith("RuntimeError: the probe task was told to fail"), message
