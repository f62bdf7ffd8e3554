"""Figures of generated images: R-precision with a retrieval model's embeddings, and sample diversity."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def r_precision(image_vectors: torch.Tensor, text_vectors: torch.Tensor, candidates: int, seed: int) -> float:
    """The share of images (N, E) whose own caption (row i of (N, E)) scores above `candidates - 1` other
    captions drawn at random (seeded) from the other rows: R-precision with R = 1. Chance is 1 / candidates."""
    rows = image_vectors.shape[0]
    if rows < candidates:
        raise ValueError(f"R-precision over {candidates} candidates needs at least that many captions, got {rows}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(rows, rows - 1, generator=generator).argsort(dim=1)[:, : candidates - 1]  # (N, c-1)
    others = draws + (draws >= torch.arange(rows)[:, None]).long()  # skip row i itself
    images = F.normalize(image_vectors.float().cpu(), dim=-1)
    texts = F.normalize(text_vectors.float().cpu(), dim=-1)
    true_scores = (images * texts).sum(dim=1)  # (N,)
    other_scores = torch.einsum("ne,nce->nc", images, texts[others])  # (N, c-1)
    return float((true_scores > other_scores.max(dim=1).values).float().mean())


def sample_diversity(samples: torch.Tensor) -> float:
    """Mean absolute pixel difference between samples of the same caption: (N, M ≥ 2, 3, S, S) in [0, 1].
    0 means every caption got one image whatever the noise (collapse)."""
    if samples.shape[1] < 2:
        raise ValueError("sample diversity needs at least two samples per caption")
    differences = (samples[:, :, None] - samples[:, None, :]).abs().flatten(3).mean(dim=3)  # (N, M, M)
    pairs = samples.shape[1] * (samples.shape[1] - 1)
    return float(differences.sum(dim=(1, 2)).mean() / pairs)
