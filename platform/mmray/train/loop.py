"""The per-worker training loop that drives any Task on every rank; where it runs (Ray Train, one plain
process) comes in as a `TrainContext`, so the loop itself knows no Ray."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmray.artifacts.frozen_weights import FrozenPart, frozen_part, write_once
from mmray.artifacts.model_bundle import load_initial_weights, load_weights, local_bundle, write_bundle
from mmray.config.jobs import TrainJob
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors, tensors_from_arrays
from mmray.devices import PrecisionChoice, resolve_precision
from mmray.distributed import describe_placement, gather_objects
from mmray.tasks.base import Batch, EvalContext, StepContext, Task
from mmray.train.augment import NAMES_SIDE, augment_images
from mmray.train.context import TrainContext
from mmray.train.feature_shards import feature_shards
from mmray.train.feeds import memory_batches, steps_per_epoch, stream_batches
from mmray.train.optimizers import layer_lr_scales, optimizer_for
from mmray.train.precision_probe import auto_precision, compute_description, fastest_precision
from mmray.train.row_pool import RowPool
from mmray.train.schedule import group_settings, retarget, warmup_cosine
from mmray.train.shard_feed import PreparedShards, shard_batches
from mmray.train.state import (
    Progress,
    load_train_state,
    optimizer_state_off_device,
    save_train_state,
    trained_precision,
)

logger = logging.getLogger("mmray.train")
FIGURES = "figures"
"""A checkpoint's folder of the figures its epoch's evaluation drew (e.g. a generator's sample grid)."""


POST_EVERY_S = 0.5


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class Worker:
    """One rank's state for a run: task, model, optimizers, data, progress."""

    scaler: torch.amp.GradScaler

    def __init__(self, config: dict[str, Any], context: TrainContext) -> None:
        self.spec: TrainJob = config["spec"]
        self.processor: Processor = config["processor"]
        self.settings = self.spec.train
        self.context = context
        torch.set_num_threads(
            config.get("threads") or self.settings.threads_per_worker or max(1, int(self.settings.cpus_per_worker))
        )
        torch.manual_seed(self.settings.seed)
        self.rank, self.world, self.device = context.rank, context.world, context.device
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # before the first collective, or every rank would use cuda:0
        self.precision = resolve_precision(self.settings.precision, self.device)
        self.task: Task = config["task_class"](self.spec.task, self.spec.model, self.processor)
        shared = {name: tensors_from_arrays(context.resolve(config[f"{name}_arrays"]))
                  for name in ("train", "val") if f"{name}_arrays" in config}  # fmt: skip
        self.train_data: SplitTensors | None = shared.get("train")
        self.val_data: SplitTensors | None = shared.get("val")
        self.train_shards: PreparedShards | None = config.get("train_shards")
        self.row_pool = RowPool()
        self.example_captions = self.task.example_captions(self.train_data) if self.train_data is not None else None
        self.micro_steps = steps_per_epoch(config["num_train_examples"], self.settings.batch_size)
        self.steps_per_epoch = max(1, self.micro_steps // self.settings.grad_accum_steps)
        self.progress = Progress()
        self.figures: dict[str, bytes] = {}
        self._posted = 0.0
        with ExitStack() as stack:
            checkpoint = stack.enter_context(context.restored_checkpoint())
            continued = None
            if checkpoint is None and self.spec.continue_from:
                continued = stack.enter_context(local_bundle(self.spec.continue_from))
            resumed = checkpoint or continued
            trained_in = trained_precision(resumed) if resumed is not None else None
            self.precision, timed = auto_precision(self.precision, trained_in)
            computes = gather_objects((context.node, os.getpid(), compute_description(self.precision, timed)))
            # One line from rank 0: Ray holds back lines that differ only in numbers (one per rank) for seconds.
            self.say(describe_placement(computes))
            self.precisions_to_time = timed if len({compute for _, _, compute in computes}) == 1 else ()
            self.model = self._placed_model(resumed, config.get("run_dir"))
            self._build_optimizers()
            if checkpoint is not None:
                self.progress = load_train_state(checkpoint, self.optimizers, self.schedulers, self.scaler)
                self.say(f"resumed from {checkpoint} after epoch {self.progress.epochs_done}")
            elif continued is not None:
                self._continue(continued)
        misplaced = optimizer_state_off_device(self.optimizers)
        if misplaced:
            raise RuntimeError(f"optimizer state restored off its parameters' device: {misplaced}")
        if self.settings.feature_cache == "auto" and (self.train_data is not None or self.train_shards is not None):
            self._use_frozen_features(config["storage_root"])
        if resumed is None:  # what the task computes from the training data before a fresh run (alike on every rank)
            done = self.task.start_weights(unwrap(self.model), self.train_data, self._eval_context())
            if done:
                self.say(done)

    def _time_precisions(self, batch: Batch) -> None:
        """`auto` on a GPU: the fastest of `precisions_to_time` on this batch's step, the same on every rank."""
        candidates, self.precisions_to_time = self.precisions_to_time, ()

        def step(choice: PrecisionChoice) -> None:
            context = StepContext(step=self.progress.global_step, autocast=choice.autocast)
            for name in self.task.optimizer_names:
                torch.autograd.backward(self.task.training_step(self.model, batch, name, context).loss)

        self.precision, timings = fastest_precision(step, candidates, unwrap(self.model), self.device)
        if self.scaler.is_enabled() != self.precision.needs_grad_scaler:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_grad_scaler)
        shown = ", ".join(f"{p} {rate * self.settings.batch_size:,.0f}" for p, rate in timings.items())
        self.say(f"precision auto: {self.precision.precision}, timed on the first batch ({shown} samples/s)")

    def _placed_model(self, weights: Path | None, run_dir: str | None) -> nn.Module:
        """The task's model with its starting weights, placed on this rank's device (and wrapped for DDP)."""
        model = self.task.build_model()
        if weights is not None:
            load_weights(model, weights)
        elif self.spec.init_from:
            with local_bundle(self.spec.init_from) as directory:
                load_initial_weights(model, self.spec.model.kind, directory)
        self.frozen: FrozenPart | None = None
        if run_dir and self.rank == 0 and (found := frozen_part(model)) is not None:
            # What never trains is written once to the run's `frozen/`; checkpoints then hold only the rest.
            self.frozen, data = found
            uri = write_once(run_dir, self.frozen, data)
            tensors, mib = len(self.frozen.names), len(data) / 2**20
            self.say(f"frozen weights ({tensors} tensors, {mib:.0f} MiB) stored once: {uri}")
        return self.context.place_model(model, self.task.find_unused_parameters)

    def _build_optimizers(self) -> None:
        """AdamW and its schedule per task optimizer, over the placed model (restored moments land on its device)."""
        model, settings, fused = unwrap(self.model), self.settings, self.device.type == "cuda"
        total = self.steps_per_epoch * settings.epochs
        warmup = int(settings.warmup_fraction * total)
        scales = layer_lr_scales(model, settings.tower_lr_scale, settings.layer_lr_decay)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        for name in self.task.optimizer_names:
            options = self.task.optimizer_options(name)
            parameters, lr = list(self.task.parameters(model, name)), settings.lr * options.lr_scale
            optimizer = optimizer_for(parameters, lr, settings.weight_decay, options.betas, fused, scales)
            self.optimizers[name] = optimizer
            self.schedulers[name] = warmup_cosine(optimizer, total, warmup, settings.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_grad_scaler)

    def _use_frozen_features(self, cache_root: str) -> None:
        """The training data with what the task computes once from frozen towers (cached) in place of their inputs."""
        cache_images = not self.settings.augment.active
        splits = {n: split for n, split in (("train", self.train_data), ("val", self.val_data)) if split is not None}
        context = self._eval_context()
        model = unwrap(self.model)
        prepared = self.task.with_frozen_features(model, splits, context, cache_root, cache_images)
        self.train_data, self.val_data = prepared.get("train", self.train_data), prepared.get("val", self.val_data)
        if self.train_shards is not None and (towers := self.task.frozen_towers(model, cache_images)) is not None:
            self.train_shards = feature_shards(self.train_shards, towers, context, cache_root)

    def _continue(self, directory: Path) -> None:
        """Another run's training state (its weights are loaded already), under this run's optimizer settings."""
        settings = {name: group_settings(optimizer) for name, optimizer in self.optimizers.items()}
        self.progress = load_train_state(directory, self.optimizers, self.schedulers, self.scaler)
        for name, optimizer in self.optimizers.items():
            retarget(optimizer, self.schedulers[name], settings[name])
        done = self.progress.epochs_done
        self.say(f"continues {self.spec.continue_from} after epoch {done} with this run's settings")

    def _eval_context(self, reference: SplitTensors | None = None) -> EvalContext:
        return EvalContext(self.rank, self.world, self.device, self.settings.eval_batch_size, self.processor, reference)

    def say(self, message: str) -> None:
        if self.rank == 0:
            logger.info("[mmray] %s", message)

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
        local_batch = self.settings.batch_size // self.world
        if self.train_shards is not None:
            return shard_batches(
                self.train_shards,
                self.processor,
                fields,
                local_batch,
                self.micro_steps,
                self.settings.seed,
                epoch,
                self.rank,
                self.world,
                pool=self.row_pool,
            )
        shard = self.context.dataset_shard("train")
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
        context = StepContext(step=self.progress.global_step, autocast=self.precision.autocast)
        losses = {}
        model = self.model
        for name in self.task.optimizer_names:
            with model.no_sync() if isinstance(model, DistributedDataParallel) and not last_micro else nullcontext():
                output = self.task.training_step(model, batch, name, context)
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
        batches, waited, first_batch = self._batches(epoch), 0.0, math.nan
        while done < self.micro_steps:
            asked = time.perf_counter()
            raw = next(batches, None)
            if raw is None:
                break
            waited += time.perf_counter() - asked
            if done == 0:
                first_batch = time.perf_counter() - started
            if augment.active and "images" in raw:
                raw["images"] = augment_images(raw["images"], augment, draws, raw.pop(NAMES_SIDE, None))
            batch = self._to_device(raw)
            if self.precisions_to_time:
                self._time_precisions(batch)
            for key, value in self._step(batch, done).items():
                totals[key] = totals.get(key, 0.0) + value
            done += 1
            if self.context.shows_progress:
                if self.rank == 0 and time.perf_counter() - self._posted >= POST_EVERY_S:
                    self._post(epoch, done, totals, started)
            elif done % log_every == 0:
                rate = done * self.settings.batch_size / (time.perf_counter() - started)
                shown = " ".join(f"{k} {v / done:.4f}" for k, v in totals.items())
                self.say(
                    f"epoch {epoch + 1}/{self.settings.epochs} step {done // self.settings.grad_accum_steps}/"
                    f"{self.steps_per_epoch} {shown} lr {self._lr():.2e} {rate:.0f} samples/s"
                )
        if self.context.shows_progress and self.rank == 0:
            self._post(epoch, done, totals, started)  # the epoch's end, whatever the throttle
        elapsed = time.perf_counter() - started
        return {
            **{f"train_{key}": value / max(1, done) for key, value in totals.items()},
            "samples_per_s": done * self.settings.batch_size / elapsed,
            "epoch_seconds": elapsed,
            "first_batch_seconds": first_batch,
            "input_wait_fraction": waited / elapsed,
            "lr": self._lr(),
            **self.task.epoch_logs(unwrap(self.model)),
        }

    def _post(self, epoch: int, done: int, totals: dict[str, float], started: float) -> None:
        """Where the run is, for the driver's progress bar."""
        loss = totals.get("loss", next(iter(totals.values()), math.nan)) / max(1, done)
        rate = done * self.settings.batch_size / (time.perf_counter() - started)
        state = {"epoch": epoch + 1, "epochs": self.settings.epochs, "step": done // self.settings.grad_accum_steps,
                 "steps": self.steps_per_epoch, "loss": loss, "samples_per_s": rate}  # fmt: skip
        self.context.post_progress(state)
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
        metrics, self.figures = self.task.evaluation_report(model, self.val_data, self._eval_context(self.train_data))
        return metrics

    def report(self, metrics: dict[str, Any]) -> None:
        """The epoch's metrics from every rank; rank 0 attaches the checkpoint."""
        if self.rank != 0:
            self.context.report(metrics, None, None)
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
            self.context.report(metrics, directory, checkpoint_name(self.progress.epochs_done))


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch:04d}"
