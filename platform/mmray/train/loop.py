"""The per-worker training loop that Ray Train runs on every rank; it drives any Task."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from mmray.artifacts.frozen_weights import FrozenPart, frozen_part, write_once
from mmray.artifacts.model_bundle import load_initial_weights, load_weights, local_bundle, write_bundle
from mmray.config.jobs import TrainJob
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors, tensors_from_arrays
from mmray.distributed import describe_placement, gather_objects
from mmray.models.freezing import FreezableTower
from mmray.tasks.base import Batch, EvalContext, StepContext, Task
from mmray.train.augment import NAMES_SIDE, augment_images
from mmray.train.feeds import memory_batches, steps_per_epoch, stream_batches
from mmray.train.schedule import group_settings, retarget, warmup_cosine
from mmray.train.state import Progress, load_train_state, save_train_state

logger = logging.getLogger("mmray.train")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
FIGURES = "figures"
"""A checkpoint's folder of the figures its epoch's evaluation drew (e.g. a generator's sample grid)."""
CHECKPOINT_SCORE = "checkpoint_score"
"""Reported with every checkpoint: the task's score when it was measured that epoch, else NaN (ranked last)."""


def optimizer_for(
    parameters: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    tower_parameters: Collection[nn.Parameter] = (),
    tower_lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW; biases, norms and scalars (1-D or 0-D parameters) get no weight decay. With a
    `tower_lr_scale` other than 1, `tower_parameters` train at lr × that scale in groups of their own."""
    in_towers = {id(p) for p in tower_parameters} if tower_lr_scale != 1.0 else set()
    groups = _decay_groups([p for p in parameters if id(p) not in in_towers], lr, weight_decay)
    scaled = [p for p in parameters if id(p) in in_towers]
    if scaled:
        groups += _decay_groups(scaled, lr * tower_lr_scale, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def _decay_groups(members: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    return [
        {"params": [p for p in members if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr},
        {"params": [p for p in members if p.ndim < 2], "weight_decay": 0.0, "lr": lr},
    ]


def tower_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's image and text towers (pretrained or not), not its heads."""
    return [p for module in model.modules() if isinstance(module, FreezableTower) for p in module.parameters()]


POST_EVERY_S = 0.5


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Worker:
    """One rank's state for a run: task, model, optimizers, data, progress."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.spec: TrainJob = config["spec"]
        self.processor: Processor = config["processor"]
        self.settings = self.spec.train
        threads = self.settings.threads_per_worker or max(1, int(self.settings.cpus_per_worker))
        torch.set_num_threads(threads)
        torch.manual_seed(self.settings.seed)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        node = ray.get_runtime_context().get_node_id()[:8]
        # One line from rank 0: Ray holds back lines that differ only in numbers (one per rank) for seconds.
        self.say(describe_placement(gather_objects((node, os.getpid())), self.device.type))
        self.task: Task = config["task_class"](self.spec.task, self.spec.model, self.processor)
        self.train_data = tensors_from_arrays(ray.get(config["train_arrays"])) if "train_arrays" in config else None
        self.val_data: SplitTensors | None = (
            tensors_from_arrays(ray.get(config["val_arrays"])) if "val_arrays" in config else None
        )
        self.example_captions = self.task.example_captions(self.train_data) if self.train_data is not None else None
        self.micro_steps = steps_per_epoch(config["num_train_examples"], self.settings.batch_size)
        self.steps_per_epoch = max(1, self.micro_steps // self.settings.grad_accum_steps)

        model = self.task.build_model()
        checkpoint = ray.train.get_checkpoint()
        if self.spec.init_from and checkpoint is None:
            with local_bundle(self.spec.init_from) as directory:
                load_initial_weights(model, self.spec.model.kind, directory)
        total = self.steps_per_epoch * self.settings.epochs
        warmup = int(self.settings.warmup_fraction * total)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        towers = tower_parameters(model)
        for name in self.task.optimizer_names:
            options = self.task.optimizer_options(name)
            lr = self.settings.lr * options.lr_scale
            parameters = list(self.task.parameters(model, name))
            self.optimizers[name] = optimizer_for(
                parameters, lr, self.settings.weight_decay, options.betas,
                towers, self.settings.tower_lr_scale,
            )  # fmt: skip
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {
            name: warmup_cosine(optimizer, total, warmup, self.settings.min_lr_ratio)
            for name, optimizer in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(enabled=self.settings.precision == "fp16")
        self.progress = Progress()
        self.figures: dict[str, bytes] = {}
        self.board: Any = config.get("progress_board")  # the driver's progress bar, when it draws one
        self._posted = 0.0
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                load_weights(model, Path(directory))
                self.progress = load_train_state(Path(directory), self.optimizers, self.schedulers, self.scaler)
            self.say(f"resumed from {checkpoint.path} after epoch {self.progress.epochs_done}")
        elif self.spec.continue_from:
            self._continue(model, self.spec.continue_from)
        self.frozen = self._store_frozen_part(model, config.get("run_dir"))
        self.model = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": self.task.find_unused_parameters}
        )
        if self.settings.feature_cache == "auto" and self.train_data is not None:
            self._use_frozen_features(config.get("storage_root"))

    def _store_frozen_part(self, model: nn.Module, run_dir: str | None) -> FrozenPart | None:
        """What of the model never trains, written once to the run's `frozen/` by rank 0; checkpoints
        then hold only the rest."""
        found = frozen_part(model) if run_dir and self.rank == 0 else None
        if found is None or run_dir is None:
            return None
        part, data = found
        uri = write_once(run_dir, part, data)
        self.say(f"frozen weights ({len(part.names)} tensors, {len(data) / 2**20:.0f} MiB) stored once: {uri}")
        return part

    def _use_frozen_features(self, cache_root: str | None) -> None:
        """Splits carrying what the task computes once from frozen towers (read from the cache when there)."""
        assert self.train_data is not None
        splits = {"train": self.train_data, **({"val": self.val_data} if self.val_data is not None else {})}
        context = EvalContext(self.rank, self.world, self.device, self.settings.eval_batch_size, self.processor, None)
        prepared = self.task.with_frozen_features(
            unwrap(self.model), splits, context, cache_root, cache_images=not self.settings.augment.active
        )
        self.train_data, self.val_data = prepared["train"], prepared.get("val", self.val_data)

    def _continue(self, model: nn.Module, uri: str) -> None:
        """Another run's weights and training state, under this run's optimizer settings."""
        settings = {name: group_settings(optimizer) for name, optimizer in self.optimizers.items()}
        with local_bundle(uri) as directory:
            load_weights(model, directory)
            self.progress = load_train_state(directory, self.optimizers, self.schedulers, self.scaler)
        for name, optimizer in self.optimizers.items():
            retarget(optimizer, self.schedulers[name], settings[name])
        self.say(f"continues {uri} after epoch {self.progress.epochs_done} with this run's settings")

    def say(self, message: str) -> None:
        if self.rank == 0:
            logger.info("[mmray] %s", message)

    def _autocast(self) -> AbstractContextManager[Any]:
        precision = self.settings.precision
        return torch.autocast(self.device.type, dtype=_AUTOCAST.get(precision), enabled=precision in _AUTOCAST)

    def _batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        fields = self.task.batch_fields
        if self.settings.augment.flip != "none" and "images" in fields:
            fields = (*fields, NAMES_SIDE)
        if self.train_data is not None:
            return memory_batches(
                self.train_data,
                fields,
                self.rank,
                self.world,
                self.settings.batch_size,
                self.settings.seed,
                epoch,
                self.example_captions,
                every_caption=self.spec.data.captions_per_epoch == "all",
            )
        shard = ray.train.get_dataset_shard("train")
        local_batch = self.settings.batch_size // self.world
        return stream_batches(shard, fields, local_batch, self.settings.seed, epoch, self.rank)

    def _to_device(self, raw: dict[str, torch.Tensor]) -> Batch:
        batch = {name: tensor.to(self.device, non_blocking=True) for name, tensor in raw.items()}
        if "images" in batch:
            batch["images"] = self.processor.normalize(batch["images"])  # (b, 3, S, S)
        if "caption_mask" in batch:
            batch["caption_mask"] = batch["caption_mask"].bool()
        return batch

    def _step(self, batch: Batch, micro: int) -> dict[str, float]:
        settings = self.settings
        last_micro = (micro + 1) % settings.grad_accum_steps == 0
        context = StepContext(step=self.progress.global_step, autocast=self._autocast)
        losses = {}
        for name in self.task.optimizer_names:
            sync: AbstractContextManager[Any] = nullcontext()
            if isinstance(self.model, nn.parallel.DistributedDataParallel) and not last_micro:
                sync = self.model.no_sync()
            with sync:
                output = self.task.training_step(self.model, batch, name, context)
                self.scaler.scale(output.loss / settings.grad_accum_steps).backward()
            if last_micro:
                optimizer = self.optimizers[name]
                if settings.clip_grad_norm:
                    self.scaler.unscale_(optimizer)
                    params = [p for group in optimizer.param_groups for p in group["params"]]
                    nn.utils.clip_grad_norm_(params, settings.clip_grad_norm)
                self.scaler.step(optimizer)
                optimizer.zero_grad(set_to_none=True)
                self.schedulers[name].step()
            key = "loss" if len(self.task.optimizer_names) == 1 else f"loss_{name}"
            losses[key] = float(output.loss.detach())
            losses.update(output.logs)
        if last_micro:
            self.scaler.update()
            self.progress.global_step += 1
        return losses

    def run_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        started = time.perf_counter()
        totals: dict[str, float] = {}
        done = 0
        log_every = self.settings.log_every_steps * self.settings.grad_accum_steps
        augment = self.settings.augment
        draws = torch.Generator().manual_seed(self.settings.seed * 7_368_787 + epoch * 1_009 + self.rank)
        for raw in self._batches(epoch):
            if done >= self.micro_steps:
                break
            if augment.active and "images" in raw:
                raw["images"] = augment_images(raw["images"], augment, draws, raw.pop(NAMES_SIDE, None))
            for key, value in self._step(self._to_device(raw), done).items():
                totals[key] = totals.get(key, 0.0) + value
            done += 1
            if self.board is not None and self.rank == 0 and time.perf_counter() - self._posted >= POST_EVERY_S:
                self._post(epoch, done, totals, started)
            elif self.board is None and done % log_every == 0:
                rate = done * self.settings.batch_size / (time.perf_counter() - started)
                shown = " ".join(f"{k} {v / done:.4f}" for k, v in totals.items())
                self.say(
                    f"epoch {epoch + 1}/{self.settings.epochs} step {done // self.settings.grad_accum_steps}/"
                    f"{self.steps_per_epoch} {shown} lr {self._lr():.2e} {rate:.0f} samples/s"
                )
        if self.board is not None and self.rank == 0:
            self._post(epoch, done, totals, started)  # the epoch's end, whatever the throttle
        elapsed = time.perf_counter() - started
        return {
            **{f"train_{key}": value / max(1, done) for key, value in totals.items()},
            "samples_per_s": done * self.settings.batch_size / elapsed,
            "epoch_seconds": elapsed,
            "lr": self._lr(),
            **self.task.epoch_logs(unwrap(self.model)),
        }

    def _post(self, epoch: int, done: int, totals: dict[str, float], started: float) -> None:
        """Where the run is, for the driver's progress bar (a fire-and-forget call)."""
        assert self.board is not None
        loss = totals.get("loss", next(iter(totals.values()), math.nan)) / max(1, done)
        rate = done * self.settings.batch_size / (time.perf_counter() - started)
        state = {"epoch": epoch + 1, "epochs": self.settings.epochs, "step": done // self.settings.grad_accum_steps,
                 "steps": self.steps_per_epoch, "loss": loss, "samples_per_s": rate}  # fmt: skip
        self.board.post.remote(state)
        self._posted = time.perf_counter()

    def _lr(self) -> float:
        return float(next(iter(self.schedulers.values())).get_last_lr()[0])

    def evaluate(self) -> dict[str, float]:
        """Metrics of the model as rank 0 will save it (its buffers, e.g. batch-norm statistics, on every
        rank); the evaluation's figures are kept for the next checkpoint."""
        if self.val_data is None:
            return {}
        model = unwrap(self.model)
        if self.world > 1:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        context = EvalContext(
            self.rank, self.world, self.device, self.settings.eval_batch_size, self.processor, self.train_data
        )
        metrics, self.figures = self.task.evaluation_report(model, self.val_data, context)
        return metrics

    def report(self, metrics: dict[str, Any]) -> None:
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mmray-ckpt-") as tmp:
            directory = Path(tmp)
            write_bundle(
                directory,
                unwrap(self.model),
                self.spec.model,
                self.processor,
                self.spec.task,
                extra={"metrics": metrics, "run": self.spec.name},
                frozen=self.frozen,
            )
            save_train_state(directory, self.progress, self.optimizers, self.schedulers, self.scaler)
            for name, content in self.figures.items():
                (directory / FIGURES / name).parent.mkdir(parents=True, exist_ok=True)
                (directory / FIGURES / name).write_bytes(content)
            self.figures = {}
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=f"checkpoint_epoch_{self.progress.epochs_done:04d}",
            )


def _set_report_log_level(level: str) -> None:
    """Ray Train 2.60 logs every report ("Reporting training result N: TrainingReport(...)") from a logger
    named after its file, which its own log level (RunConfig.logging_config) does not reach."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:
        return
    logging.getLogger(train_context.__file__).setLevel(level)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train; evaluate every `eval_every` epochs and after the last; checkpoint after every epoch.

    Every report carries `checkpoint_score`: the task's score when this epoch measured it, else NaN,
    so checkpoints are ranked only on scores that were measured."""
    _set_report_log_level(config.get("ray_log_level", "WARNING"))
    worker = Worker(config)
    settings = worker.settings
    score: str = config["score_metric"]
    for epoch in range(worker.progress.epochs_done, settings.epochs):
        metrics: dict[str, Any] = {"epoch": epoch + 1, **worker.run_epoch(epoch)}
        worker.progress.epochs_done = epoch + 1
        if (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs:
            evaluation = worker.evaluate()
            metrics.update(evaluation)
            worker.progress.last_eval_epoch = epoch + 1 if evaluation else worker.progress.last_eval_epoch
        metrics["step"] = worker.progress.global_step
        metrics[CHECKPOINT_SCORE] = float(metrics[score]) if score in metrics else math.nan
        worker.progress.history.append(metrics)
        shown = ", ".join(
            f"{k} {v:.4g}"
            for k, v in metrics.items()
            if isinstance(v, float) and (k.startswith("train_") or k == "samples_per_s" or "R@" in k or k == score)
        )
        worker.say(f"epoch {epoch + 1}/{settings.epochs} done: {shown}")
        worker.report(metrics)
