"""The examples of a split for a prediction task: one per image (with its first caption), or one per
caption that carries any of the task's caption targets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmray.data.records import IMAGE_TARGETS
from mmray.data.tensors import SplitTensors
from mmray.errors import DataError


@dataclass
class Examples:
    """Image and caption of each example."""

    image_index: torch.Tensor  # (E,) int64 into the split's images
    caption_index: torch.Tensor  # (E,) int64 into the split's captions

    @property
    def count(self) -> int:
        return int(self.image_index.shape[0])


def _caption_target(split: SplitTensors, name: str) -> torch.Tensor:
    if name not in split.caption_targets:
        known = ", ".join([*IMAGE_TARGETS, *sorted(split.caption_targets)])
        raise DataError(f"no caption of the split has a target named {name!r}; targets: {known}")
    return split.caption_targets[name]  # (C,)


def split_examples(split: SplitTensors, caption_targets: list[str]) -> Examples:
    """Per image (no caption targets) or per caption with at least one of `caption_targets` known."""
    if not caption_targets:
        return Examples(torch.arange(split.num_images), split.caption_offsets[:-1].clone())
    known = torch.zeros(split.num_captions, dtype=torch.bool)  # (C,)
    for name in caption_targets:
        known |= ~torch.isnan(_caption_target(split, name))
    captions = known.nonzero().squeeze(1)  # (E,)
    return Examples(split.caption_image[captions], captions)


def example_targets(split: SplitTensors, examples: Examples, target: str) -> torch.Tensor:
    """A target of every example: per image (labels (E, K), object_count, covered_fraction) or per caption (E,)."""
    if target in IMAGE_TARGETS:
        values: torch.Tensor = getattr(split, target)
        return values[examples.image_index]
    return _caption_target(split, target)[examples.caption_index]
