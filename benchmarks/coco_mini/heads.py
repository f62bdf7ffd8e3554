"""Projection heads trained in this process on a fold's frozen features, step for step as mmray's trainer
trains them (its batch feed, AdamW groups, warmup-cosine schedule and InfoNCE loss), so a search over
settings costs seconds per fold."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from mmray.config import TrainJob
from mmray.config.model import DualEncoderConfig
from mmray.config.training import InfoNceLossConfig
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES
from mmray.losses.representation import RepresentationLoss
from mmray.models.dual_encoder import DualEncoder, projection_head
from mmray.models.procrustes import start_from_procrustes
from mmray.train.feeds import memory_batches, steps_per_epoch
from mmray.train.optimizers import optimizer_for
from mmray.train.schedule import warmup_cosine

from .folds import FoldData


@dataclass(frozen=True)
class HeadSetting:
    """What the search varies, named as the job file names it."""

    embed_dim: int = 64
    normalize_features: bool = False
    projection: Literal["linear", "mlp"] = "linear"
    init_projections: Literal["random", "procrustes"] = "procrustes"
    init_temperature: float = 0.3
    learn_temperature: bool = True
    epochs: int = 40
    every_caption: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.1
    batch_size: int = 40
    warmup_fraction: float = 0.05
    clip_grad_norm: float | None = 1.0
    seed: int = 0

    @classmethod
    def from_job(cls, spec: TrainJob) -> HeadSetting:
        model, train = spec.model, spec.train
        assert isinstance(model, DualEncoderConfig)
        return cls(
            embed_dim=model.embed_dim,
            normalize_features=model.normalize_features,
            projection=model.projection,
            init_projections=model.init_projections,
            init_temperature=model.init_temperature,
            learn_temperature=model.learn_temperature,
            epochs=train.epochs,
            every_caption=spec.data.captions_per_epoch == "all",
            lr=train.lr,
            weight_decay=train.weight_decay,
            batch_size=train.batch_size,
            warmup_fraction=train.warmup_fraction,
            clip_grad_norm=train.clip_grad_norm,
            seed=train.seed,
        )

    def overrides(self) -> list[str]:
        """The job overrides that make mmray's trainer train this setting."""
        return [
            f"model.embed_dim={self.embed_dim}",
            f"model.normalize_features={str(self.normalize_features).lower()}",
            f"model.projection={self.projection}",
            f"model.init_projections={self.init_projections}",
            f"model.init_temperature={self.init_temperature}",
            f"model.learn_temperature={str(self.learn_temperature).lower()}",
            f"train.epochs={self.epochs}",
            f"data.captions_per_epoch={'all' if self.every_caption else 'one'}",
            f"train.lr={self.lr}",
            f"train.weight_decay={self.weight_decay}",
            f"train.batch_size={self.batch_size}",
            f"train.warmup_fraction={self.warmup_fraction}",
            f"train.clip_grad_norm={'null' if self.clip_grad_norm is None else self.clip_grad_norm}",
            f"train.seed={self.seed}",
        ]

    def describe(self) -> str:
        return " ".join(f"{key}={value}" for key, value in asdict(self).items())


def train_heads(setting: HeadSetting, fold: FoldData) -> DualEncoder:
    """A dual encoder over the features (identity towers) with its heads trained on `fold`."""
    torch.manual_seed(setting.seed)
    image_dim, text_dim = fold.images.shape[1], fold.texts.shape[1]
    model = DualEncoder(
        nn.Identity(),
        nn.Identity(),
        projection_head(image_dim, setting.embed_dim, setting.projection),
        projection_head(text_dim, setting.embed_dim, setting.projection),
        setting.init_temperature,
        setting.learn_temperature,
        setting.normalize_features,
    )
    if setting.init_projections == "procrustes":
        start_from_procrustes(model, fold.images, fold.texts, fold.caption_image)
    loss = RepresentationLoss(InfoNceLossConfig(kind="infonce"))
    examples = fold.split.num_captions if setting.every_caption else fold.split.num_images
    steps = steps_per_epoch(examples, setting.batch_size)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(parameters, setting.lr, setting.weight_decay)
    total = steps * setting.epochs
    schedule = warmup_cosine(optimizer, total, int(setting.warmup_fraction * total), 0.0)
    fields = (IMAGE_FEATURES, TEXT_FEATURES)
    step = 0
    model.train()
    for epoch in range(setting.epochs):
        batches = memory_batches(
            fold.split, fields, 0, 1, setting.batch_size, setting.seed, epoch, every_caption=setting.every_caption
        )
        for batch in batches:
            output = model(None, None, None, image_features=batch[IMAGE_FEATURES], text_features=batch[TEXT_FEATURES])
            loss(output, step=step).loss.backward()
            if setting.clip_grad_norm:
                nn.utils.clip_grad_norm_(parameters, setting.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
    return model.eval()
