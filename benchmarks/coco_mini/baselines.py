"""The two training-free-ish baselines on a fold's features, each as (embed images, embed texts)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmray.models.procrustes import procrustes_maps

from .folds import FoldData

Embed = Callable[[torch.Tensor], torch.Tensor]
PROCRUSTES_DIM = 64
"""At most this many components; 40 training images allow 39."""


def procrustes(train: FoldData) -> tuple[Embed, Embed]:
    """PCA of each modality, then the orthogonal map that best carries image components onto their
    captions' components (mmray's `procrustes_maps`, which `init_projections: procrustes` starts from)."""
    image_map, text_map = procrustes_maps(train.images, train.texts, train.caption_image, PROCRUSTES_DIM)
    return (lambda x: F.normalize(image_map(x), dim=-1)), (lambda t: F.normalize(text_map(t), dim=-1))


def procrustes_on_unit_features(train: FoldData) -> tuple[Embed, Embed]:
    """`procrustes` on each tower's features L2-normalised first (what `model.normalize_features` does)."""
    images, texts = F.normalize(train.images, dim=-1), F.normalize(train.texts, dim=-1)
    image_map, text_map = procrustes_maps(images, texts, train.caption_image, PROCRUSTES_DIM)
    return (
        lambda x: F.normalize(image_map(F.normalize(x, dim=-1)), dim=-1),
        lambda t: F.normalize(text_map(F.normalize(t, dim=-1)), dim=-1),
    )


def linear_infonce(train: FoldData, dim: int = 256, steps: int = 400) -> tuple[Embed, Embed]:
    """Two linear maps into `dim` dimensions trained with symmetric InfoNCE, full batch (every image with
    one of its captions drawn per step), Adam at 1e-3, a learned temperature from 0.05."""
    images, texts, owner = train.images, train.texts, train.caption_image
    torch.manual_seed(0)
    image_map, text_map = torch.nn.Linear(images.shape[1], dim), torch.nn.Linear(texts.shape[1], dim)
    log_scale = torch.nn.Parameter(torch.tensor(3.0))
    optimizer = torch.optim.Adam([*image_map.parameters(), *text_map.parameters(), log_scale], lr=1e-3)
    by_image = [torch.nonzero(owner == i).squeeze(1) for i in range(images.shape[0])]
    target = torch.arange(images.shape[0])
    for _ in range(steps):
        chosen = torch.stack([rows[torch.randint(len(rows), ())] for rows in by_image])  # (n,)
        a = F.normalize(image_map(images), dim=-1)  # (n, dim)
        b = F.normalize(text_map(texts[chosen]), dim=-1)  # (n, dim)
        logits = log_scale.exp().clamp(max=100) * a @ b.T  # (n, n)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return (lambda x: F.normalize(image_map(x), dim=-1)), (lambda t: F.normalize(text_map(t), dim=-1))
