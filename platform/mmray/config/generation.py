"""Conditional VAE / GAN (text → image) and caption decoder (image → text) configs and their tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmray.config.base import AttentionSection, Section
from mmray.config.model import DualEncoderConfig, EncoderConfig, ModelSection, model_kinds
from mmray.config.tasks import TaskSection, task_kinds


@model_kinds.register
class ConditionalVaeConfig(ModelSection):
    """An image VAE whose posterior and decoder are conditioned on a caption embedding from `encoder`'s
    text tower (a dual encoder, loadable from a retrieval bundle; its image tower is unused)."""

    kind: Literal["conditional_vae"] = "conditional_vae"
    encoder: DualEncoderConfig = Field(default_factory=DualEncoderConfig)
    train_condition: bool = Field(False, description="train the text tower with the VAE (else it stays frozen)")
    latent_dim: int = Field(32, ge=1)
    width: int = Field(32, ge=4, description="channels at full resolution; doubled at each halving")


@model_kinds.register
class ConditionalGanConfig(ModelSection):
    """A DCGAN-style generator and a projection discriminator, both conditioned on a caption embedding."""

    kind: Literal["conditional_gan"] = "conditional_gan"
    encoder: DualEncoderConfig = Field(default_factory=DualEncoderConfig)
    train_condition: bool = Field(False, description="train the text tower with the generator")
    noise_dim: int = Field(64, ge=1)
    width: int = Field(32, ge=4, description="channels at full resolution; doubled at each halving")
    spectral_norm: bool = Field(True, description="spectral normalisation of the discriminator's layers")


@model_kinds.register
class CaptionDecoderConfig(ModelSection, AttentionSection):
    """A transformer decoder over caption tokens that cross-attends to the image tower's feature-map cells
    (plus its pooled vector as one more memory slot); `encoder`'s text tower is unused."""

    kind: Literal["caption_decoder"] = "caption_decoder"
    encoder: EncoderConfig = Field(default_factory=DualEncoderConfig)
    train_image_tower: bool = True
    width: int = Field(192, ge=8)
    layers: int = Field(3, ge=1, le=24)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SampleEvaluationConfig(Section):
    """How a text → image model is measured each evaluation: R-precision of its samples with a trained
    retrieval model, against the same figure for the real images, and a grid of samples."""

    evaluator: str | None = Field(
        None, description="retrieval bundle or run (path or s3://) whose encoders rank captions; None: no R-precision"
    )
    images: int = Field(500, ge=2, description="validation images measured (their first caption each)")
    candidates: int = Field(100, ge=2, description="captions ranked per sample: the true one and others")
    temperature: float = Field(1.0, gt=0.0, description="scale of the noise or latent samples")
    grid_captions: int = Field(8, ge=1, le=64, description="fixed validation captions in the sample grid")
    grid_samples: int = Field(6, ge=1, le=32, description="samples per caption in the grid")
    seed: int = 0


@task_kinds.register
class VaeTaskConfig(TaskSection):
    """Conditional VAE training: reconstruction + β·KL, β warmed up linearly over `kl_warmup_steps`."""

    kind: Literal["vae"] = "vae"
    beta: float = Field(1.0, ge=0.0)
    kl_warmup_steps: int = Field(0, ge=0)
    reconstruction: Literal["bce", "mse"] = Field(
        "bce", description="per-pixel binary cross-entropy (pixels in [0, 1]) or squared error, summed per image"
    )
    evaluation: SampleEvaluationConfig = Field(default_factory=SampleEvaluationConfig)


@task_kinds.register
class GanTaskConfig(TaskSection):
    """Conditional GAN training: hinge (or non-saturating) losses, the discriminator and generator stepped
    alternately by their own optimizers."""

    kind: Literal["gan"] = "gan"
    loss: Literal["hinge", "non_saturating"] = "hinge"
    discriminator_lr_scale: float = Field(2.0, gt=0.0, description="discriminator lr = train.lr × this (TTUR)")
    adam_beta1: float = Field(0.0, ge=0.0, lt=1.0, description="Adam's β1 for both optimizers (GANs use 0 or 0.5)")
    evaluation: SampleEvaluationConfig = Field(default_factory=SampleEvaluationConfig)


class CaptionEvaluationConfig(Section):
    """How captions are decoded and scored during training."""

    images: int = Field(1000, ge=1, description="validation images captioned")
    beam: int = Field(1, ge=1, le=16, description="beam width; 1 is greedy")
    length_penalty: float = Field(0.6, ge=0.0, description="α of the ((5 + length) / 6)^α dividing beam scores")
    nearest_neighbour_baseline: bool = Field(
        True, description="also score the caption of the training image nearest in the image tower's space"
    )


@task_kinds.register
class CaptionTaskConfig(TaskSection):
    """Caption decoder training with teacher forcing; BLEU-4 and CIDEr-D of decoded captions."""

    kind: Literal["caption"] = "caption"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    evaluation: CaptionEvaluationConfig = Field(default_factory=CaptionEvaluationConfig)
