"""Losses of prediction heads, over the rows whose target is known (NaN marks a missing target)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmray.config.prediction import HeadTaskConfig, MulticlassHeadConfig, MultilabelHeadConfig


def known_rows(target: torch.Tensor) -> torch.Tensor:
    """Rows whose target has no NaN. target: (B,) or (B, K) -> (B,) bool"""
    finite = ~torch.isnan(target)
    return finite if target.ndim == 1 else finite.all(dim=-1)


def pos_weight_tensor(config: MultilabelHeadConfig, labels: int, device: torch.device) -> torch.Tensor | None:
    """The BCE positive weights as a (K,) tensor; a resolved config holds a number or one per label."""
    weight = config.pos_weight
    if weight is None:
        return None
    if weight == "balanced":
        raise ValueError("pos_weight=balanced is resolved from the training split before training")
    values = [float(weight)] * labels if isinstance(weight, int | float) else [float(w) for w in weight]
    if len(values) != labels:
        raise ValueError(f"pos_weight has {len(values)} values for {labels} labels")
    return torch.tensor(values, device=device)


def head_loss(config: HeadTaskConfig, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean loss of one head over rows with a known target; 0 (still on the graph) when none.
    outputs: (B, O) logits or values; target: (B,) class index / value, or (B, K) multi-hot."""
    rows = known_rows(target)  # (B,)
    if not bool(rows.any()):
        return outputs.sum() * 0.0
    outputs, target = outputs[rows].float(), target[rows]
    if isinstance(config, MulticlassHeadConfig):
        return F.cross_entropy(outputs, target.long(), label_smoothing=config.label_smoothing)
    if isinstance(config, MultilabelHeadConfig):
        weight = pos_weight_tensor(config, outputs.shape[-1], outputs.device)
        return F.binary_cross_entropy_with_logits(outputs, target.float(), pos_weight=weight)
    values = outputs.squeeze(-1)  # (b,)
    if config.loss == "smooth_l1":
        return F.smooth_l1_loss(values, target.float(), beta=config.beta)
    return F.mse_loss(values, target.float())
