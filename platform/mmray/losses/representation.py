"""Representation-learning losses on L2-normalised embeddings, over the global batch under DDP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmray.config.training import (
    ContrastiveLossConfig,
    InfoNceLossConfig,
    LossConfig,
    SigmoidLossConfig,
    TripletLossConfig,
)
from mmray.distributed import gather_with_grad, is_distributed, mean_over_ranks, rank_offset
from mmray.errors import ConfigError
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


HARDNESS_TEMPERATURE = 0.1
"""`weighted` negatives: softmax(−d²/τ) weights, so closer negatives count more (τ → 0: the hardest only)."""


def pairwise_distances(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between every row of `first` (N, E) and of `second` (M, E). -> (N, M)"""
    squared = first.pow(2).sum(-1, keepdim=True) + second.pow(2).sum(-1).unsqueeze(0) - 2 * first @ second.T
    return squared.clamp_min(1e-12).sqrt()  # (N, M)


Columns = tuple[torch.Tensor, torch.Tensor]
"""The gathered (global) image and text embeddings a rank's rows are compared with: (N, E) each."""


def matches(rows: int, columns: int, offset: int, device: torch.device) -> torch.Tensor:
    """Where row i's match is: column `offset + i` (a rank's rows start at `offset`). -> (B, N) bool"""
    column = torch.arange(columns, device=device).unsqueeze(0)  # (1, N)
    return column == (torch.arange(rows, device=device) + offset).unsqueeze(1)  # (B, N)


def _mined_negative(similarity: torch.Tensor, match: torch.Tensor, positive: torch.Tensor, mining: str) -> torch.Tensor:
    """Per row (B, N), the similarity of the `hardest` or `semi_hard` (else hardest) non-matching column. -> (B,)"""
    negatives = similarity.masked_fill(match, float("-inf"))  # (B, N)
    hardest = negatives.max(dim=1).values  # (B,)
    if mining != "semi_hard":
        return hardest
    easier = negatives.masked_fill(negatives >= positive.unsqueeze(1), float("-inf")).max(dim=1).values  # (B,)
    return torch.where(torch.isinf(easier), hardest, easier)  # (B,)


def _negative_term(
    distances: torch.Tensor, match: torch.Tensor, positive: torch.Tensor, margin: float, negatives: str
) -> torch.Tensor:
    """Per anchor (row), the non-matching part of the loss over its in-batch negatives. distances: (B, N);
    match: (B, N), one True per row; positive: (B,) the matching distances. -> (B,)"""
    hinge = 0.5 * F.relu(margin - distances).pow(2)  # (B, N)
    if negatives == "weighted":
        weights = torch.softmax((-distances.pow(2) / HARDNESS_TEMPERATURE).masked_fill(match, float("-inf")), dim=1)
        return (weights * hinge).sum(dim=1)  # (B,)
    if negatives in ("all", "active"):
        hinge = hinge.masked_fill(match, 0.0)  # (B, N)
        if negatives == "all":
            return hinge.sum(dim=1) / max(1, distances.shape[1] - 1)  # (B,)
        active = (hinge > 0).sum(dim=1).clamp_min(1)  # (B,)
        return hinge.sum(dim=1) / active  # (B,)
    hardest = -_mined_negative(-distances, match, -positive, negatives)  # (B,) its distance
    return 0.5 * F.relu(margin - hardest).pow(2)  # (B,)


def contrastive_batch_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    margin: float,
    negatives: str,
    columns: Columns | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """The margin contrastive loss over a batch: 0.5·d² on each matching pair (the diagonal), plus
    0.5·max(0, margin − d)² on its in-batch non-matching pairs in both directions, selected by
    `negatives`: `all` (the mean over every other pair), `active` (the mean over pairs still inside
    the margin), `weighted` (every other pair weighted by softmax(−d²/τ), the closest counting most),
    `hardest` (the closest non-matching pair), `semi_hard` (the closest one farther than the match,
    else the closest). With `columns`, the rows are this rank's share (from `offset`) of the gathered
    batch, each compared with every column: the mean of the ranks' losses is the global batch's."""
    all_image, all_text = columns or (image, text)
    image_to_text = pairwise_distances(image, all_text)  # (B, N)
    text_to_image = image_to_text.T if columns is None else pairwise_distances(text, all_image)  # (B, N)
    match = matches(image.shape[0], all_text.shape[0], offset, image.device)  # (B, N)
    positive = image_to_text[match]  # (B,)
    matching = 0.5 * positive.pow(2)  # (B,)
    forward = _negative_term(image_to_text, match, positive, margin, negatives)  # (B,)
    backward = _negative_term(text_to_image, match, positive, margin, negatives)  # (B,)
    return matching.mean() + (forward.mean() + backward.mean()) / 2


def triplet_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    margin: float,
    mining: str,
    columns: Columns | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Both directions of max(0, margin − s(i, t⁺) + s(i, t⁻)), row i's positive on the diagonal. `hardest`:
    the most similar negative (VSE++); `semi_hard`: the most similar one less similar than the positive
    (else the hardest); `all`: the mean over all. `columns`, `offset`: as in `contrastive_batch_loss`."""
    all_image, all_text = columns or (image, text)
    scores = image @ all_text.T  # (B, N)
    match = matches(image.shape[0], all_text.shape[0], offset, image.device)  # (B, N)
    positive = scores[match]  # (B,)
    losses = []
    for sims in (scores, scores.T if columns is None else text @ all_image.T):  # image→text, text→image
        if mining == "all":
            cost = F.relu(margin - positive.unsqueeze(1) + sims).masked_fill(match, 0.0)  # (B, N)
            losses.append(cost.sum(dim=1) / max(1, sims.shape[1] - 1))
            continue
        losses.append(F.relu(margin - positive + _mined_negative(sims, match, positive, mining)))  # (B,)
    return (losses[0].mean() + losses[1].mean()) / 2


def info_nce_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    logit_scale: torch.Tensor,  # ()
    columns: Columns | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Symmetric cross-entropy of scaled cosine similarities, matches on the diagonal (CLIP); with
    `columns`, this rank's rows against the gathered batch (open_clip's `local_loss`)."""
    all_image, all_text = columns or (image, text)
    logits = logit_scale * image @ all_text.T  # (B, N)
    logits_of_texts = logits.T if columns is None else logit_scale * text @ all_image.T  # (B, N)
    targets = torch.arange(image.shape[0], device=image.device) + offset  # (B,)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits_of_texts, targets)) / 2


def sigmoid_loss(
    image: torch.Tensor,  # (B, E)
    text: torch.Tensor,  # (B, E)
    logit_scale: torch.Tensor,  # ()
    logit_bias: torch.Tensor,  # ()
    columns: Columns | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """SigLIP: −log σ(z·(scale·cos + bias)) summed over every pair, z = +1 on the diagonal (matches) and
    −1 elsewhere, divided by the batch size; with `columns`, this rank's rows against every column."""
    all_text = text if columns is None else columns[1]
    logits = logit_scale * image @ all_text.T + logit_bias  # (B, N)
    signs = 2 * matches(image.shape[0], all_text.shape[0], offset, image.device).to(logits.dtype) - 1  # (B, N)
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


@dataclass
class LossOutput:
    loss: torch.Tensor  # ()
    global_batch: int


class RepresentationLoss(nn.Module):
    """Gathers both towers' embeddings from every rank, then applies the configured loss to this rank's rows."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def uses_temperature(self) -> bool:
        """Only InfoNCE and the sigmoid loss read the model's temperature (others leave it frozen for DDP)."""
        return isinstance(self.config, InfoNceLossConfig | SigmoidLossConfig)

    @property
    def uses_bias(self) -> bool:
        """Only the sigmoid loss reads the model's logit bias."""
        return isinstance(self.config, SigmoidLossConfig)

    def forward(self, output: DualEncoderOutput, step: int = 0) -> LossOutput:
        """This rank's rows against the gathered batch; the value is the global batch's loss (the mean over
        the ranks) and the gradient this rank's share of it, which DDP's averaging makes the global one."""
        image, text = output.image_embeddings, output.text_embeddings  # (B, E) each
        columns = (gather_with_grad(image), gather_with_grad(text)) if is_distributed() else None  # (N, E) each
        rows, offset = image.shape[0], rank_offset(image.shape[0])
        batch = rows if columns is None else columns[0].shape[0]
        config = self.config
        if isinstance(config, TripletLossConfig):
            loss = triplet_loss(image, text, config.margin, config.mining, columns, offset)
        elif isinstance(config, ContrastiveLossConfig) and config.negatives != "sampled":
            loss = contrastive_batch_loss(image, text, config.margin, config.negatives, columns, offset)
        elif isinstance(config, ContrastiveLossConfig):
            # each row's negatives: the captions of other pairs, by shifts drawn alike on all ranks
            generator = torch.Generator().manual_seed(step)
            shifts = torch.randint(1, batch, (config.negatives_per_positive,), generator=generator)
            indices = torch.arange(rows, device=image.device) + offset  # (B,)
            negatives = torch.cat([(indices + s) % batch for s in shifts.tolist()])  # (B·k,)
            first = torch.cat([image, image.repeat(config.negatives_per_positive, 1)])  # (B + B·k, E)
            second = torch.cat([text, (text if columns is None else columns[1])[negatives]])  # (B + B·k, E)
            is_match = torch.arange(first.shape[0], device=image.device) < rows  # (B + B·k,)
            loss = contrastive_pair_loss(first, second, is_match, config.margin)
        elif isinstance(config, SigmoidLossConfig):
            if output.logit_bias is None:
                raise ConfigError("task.loss.kind=sigmoid needs a model with a logit bias (a SigLIP hf_dual_encoder)")
            loss = sigmoid_loss(image, text, output.logit_scale, output.logit_bias, columns, offset)
        else:
            loss = info_nce_loss(image, text, output.logit_scale, columns, offset)
        return LossOutput(loss=loss + (mean_over_ranks(loss) - loss).detach(), global_batch=batch)


def freeze_unread_logit_parameters(model: nn.Module, loss: RepresentationLoss | None) -> None:
    """The dual encoder's logit scale and bias train only under a loss that reads them (DDP needs every
    trainable parameter to receive a gradient); a model without a bias needs none for `loss`."""
    bias = getattr(model, "logit_bias", None)
    if loss is not None and loss.uses_bias and bias is None:
        raise ConfigError(
            f"task loss kind {loss.config.kind!r} needs a model with a logit bias (a SigLIP hf_dual_encoder); "
            f"the model is a {type(model).__name__}"
        )
    if loss is None or not loss.uses_temperature:
        model.get_parameter("log_logit_scale").requires_grad_(False)
    if bias is not None and (loss is None or not loss.uses_bias):
        bias.requires_grad_(False)
