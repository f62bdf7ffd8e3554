"""A toy task and model registered only by the tests: a linear probe regressing the object count from
the image. It proves the training loop drives a task it does not know. Its score follows a fixed
script (`scores`, one per evaluation) so tests can check how checkpoints are ranked."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmray.config.model import IMAGENET_MEAN, IMAGENET_STD, ModelSection, model_kinds
from mmray.config.tasks import TaskSection, task_kinds
from mmray.data.processor import ImageTransform, Processor
from mmray.data.tensors import SplitTensors
from mmray.data.tokenizers import WordTokenizer
from mmray.models.registry import ModelKind, register_model
from mmray.tasks import EvalContext, Score, StepContext, StepOutput, Task, register_task


@model_kinds.register
class ProbeModelConfig(ModelSection):
    kind: Literal["test_probe"] = "test_probe"
    image_size: int = 32
    width: int = 8


class Probe(nn.Module):
    """A strided conv and a linear head: (B, 3, S, S) → (B,)."""

    def __init__(self, config: ProbeModelConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, config.width, kernel_size=4, stride=4)
        self.head = nn.Linear(config.width, 1)
        self.register_buffer("evaluations", torch.zeros((), dtype=torch.long))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.conv(images)).mean(dim=(2, 3))  # (B, W)
        return self.head(features).squeeze(-1)  # (B,)


def _build(config: ModelSection, processor: Processor) -> nn.Module:
    assert isinstance(config, ProbeModelConfig)
    return Probe(config)


def _processor(config: ModelSection, texts: Iterable[str]) -> Processor:
    assert isinstance(config, ProbeModelConfig)
    return Processor(ImageTransform(config.image_size, IMAGENET_MEAN, IMAGENET_STD), WordTokenizer.build(texts, 8))


def _no_extras(model: nn.Module, config: ModelSection, directory: Path) -> None:
    return None


def _same_config(config: ModelSection, directory: Path) -> ModelSection:
    return config


register_model("test_probe", ModelKind(_build, _processor, _no_extras, _same_config))


@task_kinds.register
class ProbeTaskConfig(TaskSection):
    kind: Literal["test_probe"] = "test_probe"
    scores: tuple[float, ...] = (0.9, 0.5, 0.7)
    fails: bool = False  # every training step raises, as a bug in a task would


class ProbeTask(Task):
    batch_fields = ("images", "object_count")

    def training_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], optimizer_name: str, context: StepContext
    ) -> StepOutput:
        assert isinstance(self.config, ProbeTaskConfig)
        if self.config.fails:
            raise RuntimeError("the probe task was told to fail")
        with context.autocast():
            predicted = model(batch["images"])  # (B,)
        loss = F.mse_loss(predicted.float(), batch["object_count"])
        return StepOutput(
            loss=loss, logs={"count_mae": float((predicted.detach().float() - batch["object_count"]).abs().mean())}
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        assert isinstance(model, Probe) and isinstance(self.config, ProbeTaskConfig)
        model.eval()
        predicted = torch.cat(
            [model(context.normalized_images(split.images[i : i + context.batch_size])).float().cpu()
             for i in range(0, split.num_images, context.batch_size)]
        )  # fmt: skip
        model.train()
        score = self.config.scores[int(model.evaluations) % len(self.config.scores)]
        model.evaluations += 1
        return {"count_mae": float((predicted - split.object_count).abs().mean()), "probe_score": score}

    @property
    def score(self) -> Score:
        return Score("probe_score", "max")


register_task("test_probe", ProbeTask)
