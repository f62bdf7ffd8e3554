"""Representation-learning losses on L2-normalised embeddings, over the global batch under DDP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmray.config.training import ContrastiveLossConfig, InfoNceLossConfig, LossConfig, TripletLossConfig
from mmray.distributed import gather_with_grad
from mmray.models.outputs import DualEncoderOutput


def contrastive_pair_loss(
    first: torch.Tensor,  # (P, E)
    second: torch.Tensor,  # (P, E)
    is_match: torch.Tensor,  # (P,) bool: True for a matching pair
    margin: float,
) -> torch.Tensor:
    """Hadsell et al.: 0.5·d² for a matching pair, 0.5·max(0, margin − d)² otherwise; the mean."""
    distance = (first - second).pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()  # (P,)
    matching = 0.5 * distance.pow(2)  # (P,)
    non_matching = 0.5 * F.relu(margin - distance).pow(2)  # (P,)
    return torch.where(is_match, matching, non_matching).mean()


def triplet_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    margin: float,
    mining: str,
) -> torch.Tensor:
    """Both directions of max(0, margin − s(i, t⁺) + s(i, t⁻)), row i's positive on the diagonal.

    `hardest`: the most similar negative (VSE++); `semi_hard`: the most similar negative that is
    still less similar than the positive (the hardest one when none is); `all`: the mean over all.
    """
    scores = image @ text.T  # (B, B)
    positive = scores.diagonal()  # (B,)
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)  # (B, B)
    losses = []
    for sims, pos in ((scores, positive), (scores.T, positive)):  # image→text, text→image
        negatives = sims.masked_fill(eye, float("-inf"))  # (B, B)
        if mining == "all":
            cost = F.relu(margin - pos.unsqueeze(1) + sims).masked_fill(eye, 0.0)  # (B, B)
            losses.append(cost.sum(dim=1) / max(1, sims.shape[1] - 1))
            continue
        hardest = negatives.max(dim=1).values  # (B,)
        if mining == "semi_hard":
            easier = negatives.masked_fill(negatives >= pos.unsqueeze(1), float("-inf"))  # (B, B)
            semi = easier.max(dim=1).values  # (B,)
            hardest = torch.where(torch.isinf(semi), hardest, semi)  # (B,)
        losses.append(F.relu(margin - pos + hardest))  # (B,)
    return (losses[0].mean() + losses[1].mean()) / 2


def info_nce_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    logit_scale: torch.Tensor,  # ()
) -> torch.Tensor:
    """Symmetric cross-entropy of scaled cosine similarities, matches on the diagonal (CLIP)."""
    logits = logit_scale * image @ text.T  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)  # (B,)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@dataclass
class LossOutput:
    loss: torch.Tensor  # ()
    global_batch: int


class RepresentationLoss(nn.Module):
    """Gathers both towers' embeddings from every rank, then applies the configured loss."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def uses_temperature(self) -> bool:
        """Only InfoNCE reads the model's temperature; other losses must leave it frozen under DDP."""
        return isinstance(self.config, InfoNceLossConfig)

    def _negative_pairs(self, batch: int, device: torch.device, seed: int) -> torch.Tensor:
        """For each image, caption indices of other pairs (same on all ranks). -> (B·k,)"""
        assert isinstance(self.config, ContrastiveLossConfig)
        generator = torch.Generator().manual_seed(seed)
        shifts = torch.randint(1, batch, (self.config.negatives_per_positive,), generator=generator)
        rows = torch.arange(batch)
        return torch.cat([(rows + s) % batch for s in shifts]).to(device)  # (B·k,)

    def forward(self, output: DualEncoderOutput, step: int = 0) -> LossOutput:
        image = gather_with_grad(output.image_embeddings)  # (N, E)
        text = gather_with_grad(output.text_embeddings)  # (N, E)
        batch = image.shape[0]
        config = self.config
        if isinstance(config, TripletLossConfig):
            loss = triplet_loss(image, text, config.margin, config.mining)
        elif isinstance(config, ContrastiveLossConfig):
            negatives = self._negative_pairs(batch, image.device, seed=step)  # (N·k,)
            repeats = config.negatives_per_positive
            first = torch.cat([image, image.repeat(repeats, 1)])  # (N + N·k, E)
            second = torch.cat([text, text[negatives]])  # (N + N·k, E)
            is_match = torch.arange(first.shape[0], device=image.device) < batch  # (N + N·k,)
            loss = contrastive_pair_loss(first, second, is_match, config.margin)
        else:
            loss = info_nce_loss(image, text, output.logit_scale)
        return LossOutput(loss=loss, global_batch=batch)
