"""A run's sequence of epochs on one rank: the starting evaluation where it is wanted, then each epoch
trained, evaluated every `train.eval_every` epochs and after the last, and reported with its checkpoint."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mmray.config import TrainJob
from mmray.config.model import HfDualEncoderConfig
from mmray.errors import ConfigError, TrainingError
from mmray.train.checkpoint_score import CHECKPOINT_SCORE
from mmray.train.context import TrainContext
from mmray.train.loop import Worker, unwrap


def run_loop(config: dict[str, Any], context: TrainContext) -> None:
    """The run's epochs (see the module). Every report carries `checkpoint_score`, the task's score where this
    epoch measured it, else NaN (only measured scores rank checkpoints), and `precision`, what this rank used."""
    worker = Worker(config, context)
    settings = worker.settings
    score: str = config["score_metric"]
    if worker.progress.epochs_done == 0 and not worker.progress.history and evaluates_at_start(worker.spec):
        start = measured(worker.evaluate(), score)
        worker.figures = {}
        if start:
            worker.progress.history.append({"epoch": 0, **start, "step": 0, "precision": worker.precision.precision})
            worker.say(f"epoch 0 (the starting model, before training): {_shown(start, score)}")
    for epoch in range(worker.progress.epochs_done, settings.epochs):
        metrics: dict[str, Any] = {"epoch": epoch + 1, **worker.run_epoch(epoch)}
        check_finite_weights(unwrap(worker.model), epoch, metrics)
        worker.progress.epochs_done = epoch + 1
        if (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs:
            evaluation = measured(worker.evaluate(), score)
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


def measured(evaluation: dict[str, float], score: str) -> dict[str, float]:
    """`evaluation`, which must give the metric ranking checkpoints (a mistyped name ranked nothing)."""
    if evaluation and score not in evaluation:
        given = ", ".join(sorted(k for k, v in evaluation.items() if isinstance(v, int | float)))
        raise ConfigError(
            f"train.checkpoint.score_attribute {score!r} is not one of the metrics this task evaluates: {given}"
        )
    return evaluation


def check_finite_weights(model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
    """Stop a run whose weights hold NaN or infinity after an epoch (steps were taken on a non-finite loss):
    before it is evaluated, scored or checkpointed, so the kept checkpoints stay the good ones."""
    weights = list(model.parameters())
    finite = torch.stack([p.detach().isfinite().all() for p in weights])  # (P,) bool
    if bool(finite.all()):
        return
    broken = int((~finite).sum())
    losses = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("train_loss"))
    raise TrainingError(
        f"the model diverged in epoch {epoch + 1}: {broken} of its {len(weights)} weight tensors hold NaN or "
        f"infinite values ({losses}); lower train.lr, set train.clip_grad_norm or train.precision fp32. "
        + (f"The checkpoints of epochs up to {epoch} are kept" if epoch else "No checkpoint was written")
    )


def evaluates_at_start(spec: TrainJob) -> bool:
    """`train.eval_at_start`, by default true for a pretrained pair trained as itself, whose starting figures
    are its zero-shot ones (a model around one, e.g. a fusion model, starts with untrained heads)."""
    at_start = spec.train.eval_at_start
    return at_start if at_start is not None else isinstance(spec.model, HfDualEncoderConfig)


def _shown(metrics: dict[str, Any], score: str) -> str:
    return ", ".join(
        f"{k} {v:.4g}"
        for k, v in metrics.items()
        if isinstance(v, float)
        and (k.startswith(("train_", "zero_shot_")) or k == "samples_per_s" or "R@" in k or k == score)
    )
