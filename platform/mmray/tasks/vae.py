"""The conditional VAE task (text → image): reconstruction + β·KL with KL warm-up; evaluated by the
validation ELBO and reconstruction error, and by the R-precision of prior samples."""

from __future__ import annotations

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.generation import VaeTaskConfig
from mmray.config.model import ModelSection
from mmray.config.tasks import TaskSection
from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.losses.generation import gaussian_kl, kl_weight, reconstruction_error, vae_terms
from mmray.models.conditional_vae import ConditionalVae
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, eval_mode, task_model
from mmray.tasks.registry import register_task
from mmray.tasks.sample_evaluation import SampleEvaluation, bound_evaluation, first_captions


class VaeTask(Task):
    batch_fields = ("images", "caption_ids", "caption_mask")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        self.vae_config = of_kind(config, VaeTaskConfig, "a vae task")
        self.samples = SampleEvaluation(self.vae_config.evaluation, processor)

    def bind(self, train: CocoDataset) -> tuple[TaskSection, ModelSection]:
        evaluation = bound_evaluation(self.vae_config.evaluation)
        return self.vae_config.model_copy(update={"evaluation": evaluation}), self.model_config

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        target = self.processor.unit_pixels(batch["images"])  # (B, 3, S, S) in [0, 1]
        with context.autocast():
            output = model(batch["images"], batch["caption_ids"], batch["caption_mask"])
        terms = vae_terms(output.logits, target, output.mu, output.logvar, self.vae_config.reconstruction)
        beta = kl_weight(self.vae_config.beta, context.step, self.vae_config.kl_warmup_steps)
        logs = {"reconstruction": float(terms.reconstruction.detach()), "kl": float(terms.kl.detach()), "beta": beta}
        return StepOutput(terms.loss(beta), logs)

    @torch.no_grad()
    def _likelihood_figures(self, vae: ConditionalVae, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        """Per-image means over the evaluated images: reconstruction error (one posterior sample, seeded),
        KL, ELBO = −(reconstruction + KL), and the per-pixel squared error of posterior-mean reconstructions."""
        ids, mask = first_captions(split, self.vae_config.evaluation.images)
        generator = torch.Generator().manual_seed(self.vae_config.evaluation.seed)
        reconstruction = kl = mse = 0.0
        for start in range(0, ids.shape[0], context.batch_size):
            stop = min(start + context.batch_size, ids.shape[0])
            images = context.normalized_images(split.images[start:stop])  # (b, 3, S, S)
            target = self.processor.unit_pixels(images)
            condition = vae.condition(ids[start:stop].to(context.device), mask[start:stop].to(context.device))
            mu, logvar = vae.encode(images, condition)
            noise = torch.randn(mu.shape, generator=generator).to(mu.device)
            latent = mu + noise * (0.5 * logvar).exp()
            error = reconstruction_error(vae.decode(latent, condition), target, self.vae_config.reconstruction)
            reconstruction += float(error.sum())
            kl += float(gaussian_kl(mu.float(), logvar.float()).sum())
            mean_image = torch.sigmoid(vae.decode(mu, condition).float())
            mse += float((mean_image - target).pow(2).flatten(1).mean(dim=1).sum())
        count = ids.shape[0]
        return {
            "val_reconstruction": reconstruction / count,
            "val_kl": kl / count,
            "elbo": -(reconstruction / count + kl / count),
            "reconstruction_mse": mse / count,
        }

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        vae = task_model(model, ConditionalVae, "vae")
        with eval_mode(vae):
            metrics = self._likelihood_figures(vae, split, context)
            sample_metrics, figures = self.samples.evaluate(vae, split, context)
        return {**metrics, **sample_metrics}, figures

    @property
    def score(self) -> Score:
        """R-precision of samples with an evaluator, else the validation ELBO."""
        return Score("r_precision" if self.vae_config.evaluation.evaluator is not None else "elbo", "max")


register_task("vae", VaeTask)
