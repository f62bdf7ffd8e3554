"""The per-worker training loop that Ray Train runs on every rank."""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from mmray.config import JobSpec
from mmray.data.tensors import SplitTensors, tensors_from_arrays
from mmray.data.transforms import normalize_images
from mmray.losses import RepresentationLoss
from mmray.models.dual_encoder import DualEncoder
from mmray.models.factory import build_model
from mmray.models.tokenizers import Tokenizer
from mmray.train.bundle import WEIGHTS, local_bundle, write_bundle
from mmray.train.evaluation import evaluate_split
from mmray.train.feeds import Batch, memory_batches, steps_per_epoch
from mmray.train.schedule import warmup_cosine
from mmray.train.state import Progress, load_train_state, save_train_state

logger = logging.getLogger("mmray.train")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases, norms and the temperature (1-D or scalar parameters) get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _unwrap(model: nn.Module) -> DualEncoder:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    assert isinstance(inner, DualEncoder)
    return inner


def _dataset_batches(shard: Any, local_batch: int, device: torch.device) -> Any:
    for batch in shard.iter_torch_batches(batch_size=local_batch, drop_last=True, device=device):
        yield Batch(images=batch["image"], ids=batch["ids"], mask=batch["mask"].bool())


class _Worker:
    """One rank's state for a run: model, optimizer, data, progress."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.spec = JobSpec.model_validate(config["spec"])
        self.settings = self.spec.train
        threads = self.settings.threads_per_worker or max(1, int(self.settings.cpus_per_worker))
        torch.set_num_threads(threads)
        torch.manual_seed(self.settings.seed)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.tokenizer: Tokenizer = config["tokenizer"]
        self.train_data: SplitTensors | None = (
            tensors_from_arrays(ray.get(config["train_arrays"])) if config.get("train_arrays") else None
        )
        self.val_data = tensors_from_arrays(ray.get(config["val_arrays"])) if config.get("val_arrays") else None
        self.num_train_images: int = config["num_train_images"]
        self.local_batch = self.settings.batch_size // self.world
        self.micro_steps = steps_per_epoch(self.num_train_images, self.settings.batch_size)
        self.steps_per_epoch = max(1, self.micro_steps // self.settings.grad_accum_steps)

        model = build_model(self.spec.model, self.tokenizer)
        self.loss = RepresentationLoss(self.spec.loss)
        if not self.loss.uses_temperature:
            model.log_logit_scale.requires_grad_(False)
        if self.spec.checkpoint and ray.train.get_checkpoint() is None:
            self._warm_start(model, self.spec.checkpoint)
        self.optimizer = _optimizer(model, self.settings.lr, self.settings.weight_decay)
        total = self.steps_per_epoch * self.settings.epochs
        warmup = int(self.settings.warmup_fraction * total)
        self.scheduler = warmup_cosine(self.optimizer, total, warmup, self.settings.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(enabled=self.settings.precision == "fp16")
        self.progress = Progress()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                model.load_state_dict(torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True))
                self.progress = load_train_state(Path(directory), self.optimizer, self.scheduler, self.scaler)
            self.say(f"resumed from {checkpoint.path} after epoch {self.progress.epochs_done}")
        self.model = ray.train.torch.prepare_model(model)

    def _warm_start(self, model: nn.Module, bundle_uri: str) -> None:
        with local_bundle(bundle_uri) as directory:
            model.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))

    def say(self, message: str) -> None:
        if self.rank == 0:
            logger.info("[mmray] %s", message)

    def _batches(self, epoch: int) -> Any:
        if self.train_data is not None:
            return memory_batches(
                self.train_data, self.rank, self.world, self.settings.batch_size, self.settings.seed, epoch
            )
        return _dataset_batches(ray.train.get_dataset_shard("train"), self.local_batch, self.device)

    def _step(self, batch: Batch, micro: int) -> float:
        settings = self.settings
        images = normalize_images(batch.images.to(self.device), self.spec.model.image.mean, self.spec.model.image.std)
        ids, mask = batch.ids.to(self.device), batch.mask.to(self.device)
        last_micro = (micro + 1) % settings.grad_accum_steps == 0
        model = self.model
        if isinstance(model, nn.parallel.DistributedDataParallel) and not last_micro:
            sync: AbstractContextManager[Any] = model.no_sync()
        else:
            sync = nullcontext()
        autocast = torch.autocast(
            self.device.type, dtype=_AUTOCAST.get(settings.precision), enabled=settings.precision in _AUTOCAST
        )
        with sync:
            with autocast:
                output = self.model(images, ids, mask)
            loss = self.loss(output, step=self.progress.global_step).loss
            self.scaler.scale(loss / settings.grad_accum_steps).backward()
        if last_micro:
            if settings.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), settings.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.progress.global_step += 1
        return float(loss.detach())

    def run_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        started = time.perf_counter()
        losses: list[float] = []
        for micro, batch in enumerate(self._batches(epoch)):
            if micro >= self.micro_steps:
                break
            losses.append(self._step(batch, micro))
            step = (micro + 1) // self.settings.grad_accum_steps
            if (micro + 1) % (self.settings.log_every_steps * self.settings.grad_accum_steps) == 0:
                rate = (micro + 1) * self.settings.batch_size / (time.perf_counter() - started)
                self.say(
                    f"epoch {epoch + 1}/{self.settings.epochs} step {step}/{self.steps_per_epoch} "
                    f"loss {sum(losses[-20:]) / len(losses[-20:]):.4f} "
                    f"lr {self.scheduler.get_last_lr()[0]:.2e} {rate:.0f} samples/s"
                )
        elapsed = time.perf_counter() - started
        return {
            "train_loss": sum(losses) / max(1, len(losses)),
            "samples_per_s": len(losses) * self.settings.batch_size / elapsed,
            "epoch_seconds": elapsed,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "temperature": float(1.0 / _unwrap(self.model).logit_scale.detach()),
        }

    def evaluate(self) -> dict[str, float]:
        """Metrics of the model as rank 0 will save it (its batch-norm statistics on every rank)."""
        if self.val_data is None:
            return {}
        if self.world > 1:
            for buffer in _unwrap(self.model).buffers():
                torch.distributed.broadcast(buffer, src=0)
        image = self.spec.model.image
        return evaluate_split(
            _unwrap(self.model),
            self.val_data,
            image.mean,
            image.std,
            self.settings.eval_batch_size,
            self.rank,
            self.world,
            self.device,
        )

    def report(self, metrics: dict[str, Any]) -> None:
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mmray-ckpt-") as tmp:
            directory = Path(tmp)
            write_bundle(directory, _unwrap(self.model), self.tokenizer, self.spec, extra={"metrics": metrics})
            save_train_state(directory, self.progress, self.optimizer, self.scheduler, self.scaler)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(tmp),
                checkpoint_dir_name=f"checkpoint_epoch_{self.progress.epochs_done:04d}",
            )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train, evaluate every `eval_every` epochs and after the last, checkpoint after every epoch."""
    worker = _Worker(config)
    settings = worker.settings
    for epoch in range(worker.progress.epochs_done, settings.epochs):
        metrics = worker.run_epoch(epoch)
        worker.progress.epochs_done = epoch + 1
        if (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs:
            worker.progress.last_eval = {**worker.evaluate(), "eval_epoch": epoch + 1}
        metrics = {
            "epoch": epoch + 1,
            "step": worker.progress.global_step,
            **metrics,
            **worker.progress.last_eval,
        }
        worker.progress.history.append(metrics)
        fresh = metrics.get("eval_epoch") == epoch + 1
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith(("loss", "per_s")) or (fresh and "R@" in k)
        )
        worker.say(f"epoch {epoch + 1}/{settings.epochs} done: {shown}")
        worker.report(metrics)
