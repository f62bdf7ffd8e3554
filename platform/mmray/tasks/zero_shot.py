"""Zero-shot classification with an image–text model: class-name prompts embedded by the text tower,
images ranked against them by cosine similarity (as CLIP's ImageNet evaluation, on multi-label data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmray.config.tasks import ZeroShotSettings
from mmray.data.processor import Processor
from mmray.errors import ConfigError
from mmray.metrics.prediction import multilabel_metrics
from mmray.models.embedding import EmbeddingModel


@torch.no_grad()
def class_embeddings(
    model: EmbeddingModel, processor: Processor, settings: ZeroShotSettings, device: torch.device
) -> torch.Tensor:
    """Per class, the L2-normalised mean of its prompts' embeddings. -> (K, E)"""
    assert settings.class_names is not None
    prompts = [template.format(name) for name in settings.class_names for template in settings.prompts]
    batch = processor.tokenize(prompts)
    vectors = model.embed_texts(batch.ids.to(device), batch.mask.to(device)).float()  # (K·T, E)
    per_class = vectors.view(len(settings.class_names), len(settings.prompts), -1).mean(dim=1)  # (K, E)
    return F.normalize(per_class, dim=-1)


def zero_shot_metrics(image_vectors: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """`zero_shot_top1`: the share of labelled images whose most similar class is one of their labels;
    `zero_shot_mAP`: mean average precision of the similarities over the classes present.
    image_vectors: (N, E), classes: (K, E), labels: (N, K) multi-hot."""
    if labels.shape[1] != classes.shape[0]:
        raise ConfigError(
            f"task.zero_shot names {classes.shape[0]} classes but the data has {labels.shape[1]} label columns"
        )
    scores = image_vectors.float() @ classes.T.to(image_vectors.device).float()  # (N, K)
    labels = labels.to(scores.device)
    labelled = labels.sum(dim=1) > 0  # (N,)
    best = scores.argmax(dim=1)  # (N,)
    hits = labels.gather(1, best.unsqueeze(1)).squeeze(1) > 0  # (N,)
    top1 = float(hits[labelled].float().mean()) if bool(labelled.any()) else float("nan")
    return {"zero_shot_top1": top1, "zero_shot_mAP": multilabel_metrics(scores, labels, 0.5)["mAP"]}
