"""The Task interface that the training loop drives, knowing no task by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import nn

from mmray.config.model import ModelSection
from mmray.config.tasks import TaskSection
from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.distributed import gather_rows, shard_range
from mmray.models.registry import build_model
from mmray.tasks.feature_cache import FrozenTowers

ModelT = TypeVar("ModelT", bound=nn.Module)

Batch = dict[str, torch.Tensor]
"""A batch: field name → tensor on the training device; `images` already normalised float (B, 3, S, S),
`caption_ids` / `caption_mask` (B, L) one caption per image, `labels` (B, K) multi-hot, `object_count` /
`covered_fraction` / `box_count` (B,), `boxes` (B, M, 4)."""


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block; its train / eval mode is restored after it, also on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def task_model(model: nn.Module, expected: type[ModelT], task: str) -> ModelT:
    """The model inside a DDP wrapper (or `model` itself), checked to be what task `task` trains."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, expected):
        raise TypeError(f"the {task} task needs a {expected.__name__} model, got {type(inner).__name__}")
    return inner


@dataclass(frozen=True)
class Score:
    """The metric that ranks a task's checkpoints, and whether higher or lower is better."""

    metric: str
    mode: Literal["max", "min"]


@dataclass
class StepContext:
    """What a training step may use besides the batch: the global step and the loop's autocast."""

    step: int
    autocast: Callable[[], AbstractContextManager[Any]]


@dataclass
class StepOutput:
    """The loss to back-propagate for one optimizer, and scalars to log."""

    loss: torch.Tensor  # ()
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalContext:
    """Where an evaluation runs: this rank's place in the group, its device, the batch size."""

    rank: int
    world: int
    device: torch.device
    batch_size: int
    processor: Processor
    reference: SplitTensors | None = None
    """The training split, for baselines that look things up in it (held in memory only)."""

    def normalized_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) on any device → normalised float on this context's device."""
        return self.processor.normalize(pixels.to(self.device))

    @torch.no_grad()
    def rows(self, encode: Callable[[int, int], torch.Tensor], count: int) -> torch.Tensor:
        """`encode(start, stop)` over this rank's share of `count` rows, gathered on the CPU. -> (count, D)"""
        rows = shard_range(count, self.rank, self.world)
        size = self.batch_size
        pieces = [encode(start, min(start + size, rows.stop)).float() for start in range(rows.start, rows.stop, size)]
        local = torch.cat(pieces) if pieces else encode(0, 1).float()[:0]  # (n_r, D)
        return gather_rows(local, count, self.world).cpu()

    def image_rows(self, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """`encode` of normalised uint8 `images` (N, 3, S, S) → (N, D) on the CPU, rows shared by the ranks."""
        return self.rows(lambda start, stop: encode(self.normalized_images(images[start:stop])), images.shape[0])


@dataclass(frozen=True)
class OptimizerOptions:
    """How one of a task's optimizers differs from the job's `train` settings."""

    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)


class Task(ABC):
    """One kind of training: its model, batch fields, training step(s), evaluation and checkpoint score.

    The loop calls `training_step` once per name in `optimizer_names`, in order, and steps that
    optimizer after each (so a GAN alternates discriminator and generator). Evaluation runs on
    every rank with the unwrapped model and must return the same metrics on every rank.
    """

    batch_fields: tuple[str, ...]
    example_unit: Literal["image", "caption"] = "image"
    optimizer_names: ClassVar[tuple[str, ...]] = ("model",)
    find_unused_parameters: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.evaluate is Task.evaluate and cls.evaluation_report is Task.evaluation_report:
            raise TypeError(f"task {cls.__name__} must override evaluate or evaluation_report")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        self.config = config
        self.model_config = model_config
        self.processor = processor

    def build_model(self) -> nn.Module:
        """The model this task trains (by default the registered model of `model.kind`)."""
        return build_model(self.model_config, self.processor)

    def parameters(self, model: nn.Module, optimizer_name: str) -> Iterator[nn.Parameter]:
        """The trainable parameters that optimizer `optimizer_name` updates."""
        return (p for p in model.parameters() if p.requires_grad)

    def optimizer_options(self, optimizer_name: str) -> OptimizerOptions:
        """Learning-rate scale and Adam betas of optimizer `optimizer_name`."""
        return OptimizerOptions()

    @abstractmethod
    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        """The loss of one (micro-)batch for optimizer `optimizer_name`; `model` may be DDP-wrapped."""

    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        """Metrics of `model` on a split; must include `score.metric`. A task overrides this method or
        `evaluation_report`: each defaults to the other."""
        return self.evaluation_report(model, split, context)[0]

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        """Metrics and figures (PNG bytes by file name) of an evaluation; by default no figures."""
        return self.evaluate(model, split, context), {}

    def bind(self, train: CocoDataset) -> tuple[TaskSection, ModelSection]:
        """Task and model configs with what the training data decides filled in (class counts, names,
        weights); run once on the driver before training, so bundles record the resolved configs."""
        return self.config, self.model_config

    def evaluation_split(self, split: CocoDataset) -> CocoDataset:
        """`split`, about to be evaluated by the bound task, with its labels as the task reads them (in the
        order of the classes it was trained on); refused where the split lacks what the task evaluates."""
        return split

    def with_frozen_features(
        self,
        model: nn.Module,
        splits: dict[str, SplitTensors],
        context: EvalContext,
        cache_root: str | None,
        cache_images: bool = True,
    ) -> dict[str, SplitTensors]:
        """The splits with what the task computes once from the model's frozen parts added (as image or
        caption extras, which its batches and evaluation then read); by default unchanged.
        `cache_images` False: training batches augment the images, so image features are not fixed."""
        return splits

    def frozen_towers(self, model: nn.Module, cache_images: bool = True) -> FrozenTowers | None:
        """The encoders of the model's frozen parts whose features a streamed split carries instead of its
        inputs (the fields `with_frozen_features` names in `batch_fields`); by default None."""
        return None

    def start_weights(self, model: nn.Module, split: SplitTensors | None, context: EvalContext) -> str | None:
        """Set starting weights that the task computes from the training split (before the first step of a
        fresh run; not on resumption or continuation); a line saying what was done, or None (the default)."""
        return None

    def example_captions(self, split: SplitTensors) -> torch.Tensor | None:
        """For tasks whose examples are captions, the caption indices that are examples (E,); None
        for one example per image with a caption drawn each epoch."""
        return None

    @property
    @abstractmethod
    def score(self) -> Score:
        """The metric ranking checkpoints."""

    def epoch_logs(self, model: nn.Module) -> dict[str, float]:
        """Scalars of the model reported after each epoch (e.g. a learned temperature)."""
        return {}
