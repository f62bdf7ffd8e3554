"""AdamW parameter groups: no weight decay on biases, norms and scalars; towers at a scale of the lr, and
with layer-wise decay, each tower block at a further factor per block above it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmray.models.freezing import FreezableTower


def optimizer_for(
    parameters: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    fused: bool = False,
    lr_scales: Mapping[int, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW; biases, norms and scalars (1-D or 0-D parameters) get no weight decay. `lr_scales` (id of a
    parameter → lr multiplier, as `layer_lr_scales` gives): one pair of groups per multiplier, the largest
    (the heads' 1) first. `fused`: one CUDA kernel for the whole update (parameters on a GPU)."""
    by_scale: dict[float, list[nn.Parameter]] = {1.0: []}
    for parameter in parameters:
        by_scale.setdefault((lr_scales or {}).get(id(parameter), 1.0), []).append(parameter)
    groups: list[dict[str, Any]] = []
    for scale, members in sorted(by_scale.items(), reverse=True):
        if members or scale == 1.0:
            groups += [
                {"params": [p for p in members if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr * scale},
                {"params": [p for p in members if p.ndim < 2], "weight_decay": 0.0, "lr": lr * scale},
            ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def layer_lr_scales(model: nn.Module, tower_lr_scale: float, layer_decay: float) -> dict[int, float]:
    """id of each tower parameter → its lr multiplier: `tower_lr_scale` × `layer_decay`^k, k the number of
    blocks above it in its tower (0 for what follows the last block, the block count + 1 for the
    embeddings / stem). With decay 1 every tower parameter gets `tower_lr_scale`."""
    scales: dict[int, float] = {}
    for tower in (m for m in model.modules() if isinstance(m, FreezableTower)):
        layers = tower.lr_layers()
        for depth, layer in enumerate(layers):
            for parameter in layer:
                scales.setdefault(id(parameter), tower_lr_scale * layer_decay ** (len(layers) - 1 - depth))
    return scales
