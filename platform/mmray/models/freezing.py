"""Freezing a tower, or all of it but its last blocks. Frozen means frozen: no gradients, and frozen
modules stay in eval mode, so batch-norm statistics and dropout do not change them either."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from torch import nn


class FreezableTower(nn.Module):
    """A tower whose frozen part stays in eval mode whatever `train()` is called with."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen_modules: list[nn.Module] = []
        self._depths: tuple[list[nn.Module], list[nn.Module]] = ([], [])

    def freeze(
        self,
        blocks: Sequence[nn.Module],
        trainable_blocks: int | None,
        before: Sequence[nn.Module] = (),
        after: Sequence[nn.Module] = (),
    ) -> None:
        """`None`: everything trains; `0`: the whole tower is frozen; `N`: the last N of `blocks` train with
        the modules `after` them (pooling, final norms), the rest is frozen (stems, embeddings, parameters of
        the tower itself). The blocks, in order, also give the tower's depths for `lr_layers`."""
        if blocks:
            self._depths = ([*before], [*blocks])
        if trainable_blocks is None:
            return
        if trainable_blocks > len(blocks):
            raise ValueError(f"trainable_blocks={trainable_blocks} but the tower has only {len(blocks)} blocks")
        self.requires_grad_(False)
        if trainable_blocks == 0:
            self._frozen_modules = [self]
        else:
            first_trained = len(blocks) - trainable_blocks
            self._frozen_modules = [*before, *blocks[:first_trained]]
            for module in [*blocks[first_trained:], *after]:
                module.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Self:
        super().train(mode and self not in self._frozen_modules)
        for module in self._frozen_modules:
            if module is not self:
                module.train(False)
        return self

    def lr_layers(self) -> list[list[nn.Parameter]]:
        """The tower's parameters by depth, input side first (for layer-wise learning-rate decay): the
        modules before its blocks, then each block, then everything else (the modules after the blocks)."""
        before, blocks = self._depths
        layers = [[p for module in before for p in module.parameters()], *[list(b.parameters()) for b in blocks]]
        placed = {id(p) for layer in layers for p in layer}
        return [*layers, [p for p in self.parameters() if id(p) not in placed]]
