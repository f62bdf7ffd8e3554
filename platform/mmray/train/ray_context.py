"""The training loop on Ray Train: each worker's `TrainContext` and the function TorchTrainer runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from torch import nn

from mmray.cluster.ray_compat import train_report_logger
from mmray.errors import BundleError, ConfigError, TrainingError
from mmray.train.checkpoint_score import CHECKPOINT_SCORE, ranked_by_ray
from mmray.train.context import TrainContext
from mmray.train.epochs import run_loop


class RayTrainContext(TrainContext):
    """A Ray Train worker; progress is posted to the driver's board actor."""

    def __init__(self, score_mode: str, board: Any = None) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.node = ray.get_runtime_context().get_node_id()[:8]
        self.board, self.score_mode = board, score_mode
        self.shows_progress = board is not None

    @contextmanager
    def restored_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def place_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        placed: nn.Module = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters}
        )
        return placed

    def report(self, metrics: dict[str, Any], checkpoint: Path | None, checkpoint_name: str | None) -> None:
        if CHECKPOINT_SCORE in metrics:
            metrics = {**metrics, CHECKPOINT_SCORE: ranked_by_ray(metrics[CHECKPOINT_SCORE], self.score_mode)}
        saved = ray.train.Checkpoint.from_directory(checkpoint) if checkpoint is not None else None
        ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=checkpoint_name)

    def resolve(self, value: Any) -> Any:
        return ray.get(value) if isinstance(value, ray.ObjectRef) else value

    def dataset_shard(self, name: str) -> Any:
        return ray.train.get_dataset_shard(name)

    def post_progress(self, state: dict[str, float]) -> None:
        self.board.post.remote(state)  # fire and forget


LOOP_CONFIG = "loop_config"
"""The key of `train_loop_config` holding the object-store reference to the loop's config. Ray Train hands its
train_loop_config to the run's controller too, which would import the task, model and data code (torch
included, seconds of CPU before any worker starts) to unpickle the config itself; a reference it leaves alone."""


def train_loop_per_worker(train_loop_config: dict[str, Any]) -> dict[str, str] | None:
    """What every Ray Train worker runs: the loop (`run_loop`) in this worker's context. A stop that every
    rank meets alike and every retry would meet again (a `ConfigError`, a damaged checkpoint's `BundleError`, a
    `TrainingError` such as divergence) ends the loop with its error as the return value (rank 0's is the
    run's) instead of failing a worker, which Ray Train retries `max_failures` times; `trainer.finish_run`
    raises it."""
    config: dict[str, Any] = ray.get(train_loop_config[LOOP_CONFIG])
    # Ray Train 2.60 logs every report ("Reporting training result N: TrainingReport(...)") from a logger
    # named after its file, which its own log level (RunConfig.logging_config) does not reach.
    report_logger = train_report_logger()
    if report_logger is not None:
        report_logger.setLevel(config.get("ray_log_level", "WARNING"))
    try:
        run_loop(config, RayTrainContext(config["score_mode"], config.get("progress_board")))
    except (ConfigError, BundleError, TrainingError) as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return None
