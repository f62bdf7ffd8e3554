"""The conditional GAN task (text → image): the discriminator and the generator stepped alternately by
their own Adam optimizers (TTUR learning rates); evaluated by the R-precision of samples against the
real images' and by how much samples of one caption differ."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.generation import GanTaskConfig
from mmray.config.model import ModelSection
from mmray.config.tasks import TaskSection
from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.errors import ConfigError
from mmray.losses.generation import discriminator_loss, generator_loss
from mmray.models.conditional_gan import ConditionalGan
from mmray.tasks.base import (
    Batch,
    EvalContext,
    OptimizerOptions,
    Score,
    StepContext,
    StepOutput,
    Task,
    eval_mode,
    task_model,
)
from mmray.tasks.registry import register_task
from mmray.tasks.sample_evaluation import SampleEvaluation, bound_evaluation


def as_gan(model: nn.Module) -> ConditionalGan:
    return task_model(model, ConditionalGan, "gan")


class GanTask(Task):
    batch_fields = ("images", "caption_ids", "caption_mask")
    optimizer_names = ("discriminator", "generator")
    find_unused_parameters = True  # each step leaves the other network out of the graph

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        self.gan_config = of_kind(config, GanTaskConfig, "a gan task")
        self.samples = SampleEvaluation(self.gan_config.evaluation, processor)

    def bind(self, train: CocoDataset) -> tuple[TaskSection, ModelSection]:
        if self.gan_config.evaluation.evaluator is None:
            raise ConfigError(
                "task.evaluation.evaluator is required for a gan job: checkpoints are ranked by the R-precision "
                "of samples, measured with a retrieval bundle (e.g. runs/shapes-clip)"
            )
        evaluation = bound_evaluation(self.gan_config.evaluation)
        return self.gan_config.model_copy(update={"evaluation": evaluation}), self.model_config

    def parameters(self, model: nn.Module, optimizer_name: str) -> Iterator[nn.Parameter]:
        """The discriminator's, or the generator's with the text tower's when it trains."""
        gan = as_gan(model)
        modules = (gan.discriminator,) if optimizer_name == "discriminator" else (gan.generator, gan.encoder)
        return (p for module in modules for p in module.parameters() if p.requires_grad)

    def optimizer_options(self, optimizer_name: str) -> OptimizerOptions:
        scale = self.gan_config.discriminator_lr_scale if optimizer_name == "discriminator" else 1.0
        return OptimizerOptions(lr_scale=scale, betas=(self.gan_config.adam_beta1, 0.999))

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        real = self.processor.unit_pixels(batch["images"])  # (B, 3, S, S) in [0, 1]
        noise = torch.randn(real.shape[0], as_gan(model).noise_dim, device=real.device)  # (B, N)
        with context.autocast():
            scores = model(optimizer_name, real, batch["caption_ids"], batch["caption_mask"], noise)
        fake = scores.fake.float()
        if optimizer_name == "discriminator":
            assert scores.real is not None
            real_scores = scores.real.float()
            logs = {"d_real": float(real_scores.mean().detach()), "d_fake": float(fake.mean().detach())}
            return StepOutput(discriminator_loss(real_scores, fake, self.gan_config.loss), logs)
        return StepOutput(generator_loss(fake, self.gan_config.loss))

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        gan = as_gan(model)
        with eval_mode(gan):
            return self.samples.evaluate(gan, split, context)

    @property
    def score(self) -> Score:
        return Score("r_precision", "max")


register_task("gan", GanTask)
