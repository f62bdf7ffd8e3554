"""Freezing a tower, or all of it but its last blocks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def freeze_all_but_last(tower: nn.Module, blocks: Sequence[nn.Module], trainable_blocks: int | None) -> None:
    """`None`: everything trains; `0`: the tower is frozen; `N`: only the last N of `blocks` train."""
    if trainable_blocks is None:
        return
    if trainable_blocks > len(blocks):
        raise ValueError(f"trainable_blocks={trainable_blocks} but the tower has only {len(blocks)} blocks")
    for parameter in tower.parameters():
        parameter.requires_grad_(False)
    for block in list(blocks)[len(blocks) - trainable_blocks :]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
