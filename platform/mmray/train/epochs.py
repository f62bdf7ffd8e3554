"""A run's sequence of epochs on one rank: the starting evaluation where it is wanted, then each epoch
trained, evaluated every `train.eval_every` epochs and after the last, and reported with its checkpoint."""

from __future__ import annotations

import math
from typing import Any

from mmray.config import TrainJob
from mmray.config.model import HfDualEncoderConfig
from mmray.train.context import TrainContext
from mmray.train.loop import CHECKPOINT_SCORE, Worker


def run_loop(config: dict[str, Any], context: TrainContext) -> None:
    """Train; evaluate every `eval_every` epochs and after the last; checkpoint after every epoch.

    Every report carries `checkpoint_score`: the task's score when this epoch measured it, else NaN,
    so checkpoints are ranked only on scores that were measured, and `precision`: what this rank
    computed in."""
    worker = Worker(config, context)
    settings = worker.settings
    score: str = config["score_metric"]
    if worker.progress.epochs_done == 0 and not worker.progress.history and evaluates_at_start(worker.spec):
        start = worker.evaluate()
        worker.figures = {}
        if start:
            worker.progress.history.append({"epoch": 0, **start, "step": 0, "precision": worker.precision.precision})
            worker.say(f"epoch 0 (the starting model, before training): {_shown(start, score)}")
    for epoch in range(worker.progress.epochs_done, settings.epochs):
        metrics: dict[str, Any] = {"epoch": epoch + 1, **worker.run_epoch(epoch)}
        worker.progress.epochs_done = epoch + 1
        if (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs:
            evaluation = worker.evaluate()
            metrics.update(evaluation)
            worker.progress.last_eval_epoch = epoch + 1 if evaluation else worker.progress.last_eval_epoch
        metrics["step"] = worker.progress.global_step
        metrics["precision"] = worker.precision.precision
        metrics[CHECKPOINT_SCORE] = float(metrics[score]) if score in metrics else math.nan
        worker.progress.history.append(metrics)
        worker.say(f"epoch {epoch + 1}/{settings.epochs} done: {_shown(metrics, score)}")
        worker.report(metrics)
        if epoch + 1 == config.get("stop_after_epoch"):
            worker.say(f"stopped after epoch {epoch + 1} as asked; a rerun resumes from its checkpoint")
            return


def evaluates_at_start(spec: TrainJob) -> bool:
    """`train.eval_at_start`, by default true for a pretrained pair trained as itself, whose starting figures
    are its zero-shot ones (a model around one, e.g. a fusion model, starts with untrained heads)."""
    if spec.train.eval_at_start is not None:
        return spec.train.eval_at_start
    return isinstance(spec.model, HfDualEncoderConfig)


def _shown(metrics: dict[str, Any], score: str) -> str:
    return ", ".join(
        f"{k} {v:.4g}"
        for k, v in metrics.items()
        if isinstance(v, float)
        and (k.startswith(("train_", "zero_shot_")) or k == "samples_per_s" or "R@" in k or k == score)
    )
