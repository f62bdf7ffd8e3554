"""Training-time augmentation: random resized crops, and mirroring only images whose caption names no side."""

from __future__ import annotations

import pytest
import torch

from mmray.config.training import AugmentSettings
from mmray.data.images import resize_square
from mmray.train.augment import augment_images, names_a_side


def _batch() -> torch.Tensor:
    ramp = torch.arange(32, dtype=torch.uint8).mul(7).view(1, 1, 1, 32).expand(6, 3, 32, 32)  # left dark, right bright
    return ramp.clone()


def test_captions_naming_a_side_are_found() -> None:
    found = names_a_side(["a dog on the left of a bench", "A red circle, RIGHT side", "a bright cat", "leftover pizza"])
    assert found.tolist() == [True, True, False, False]


def test_only_images_whose_caption_names_no_side_are_mirrored() -> None:
    pixels = _batch()
    sides = torch.tensor([True, True, True, False, False, False])
    settings = AugmentSettings(flip="unless_sides")
    mirrored_rows: set[int] = set()
    for seed in range(20):
        out = augment_images(pixels, settings, torch.Generator().manual_seed(seed), sides)
        for row in range(6):
            if torch.equal(out[row], pixels[row].flip(-1)):
                mirrored_rows.add(row)
            else:
                assert torch.equal(out[row], pixels[row])
    assert mirrored_rows == {3, 4, 5}
    with pytest.raises(ValueError, match="which captions name a side"):
        augment_images(pixels, settings, torch.Generator())


def test_random_resized_crops_differ_per_image_and_keep_the_size() -> None:
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    settings = AugmentSettings(crop="random_resized", crop_scale=(0.3, 0.6))
    out = augment_images(pixels, settings, torch.Generator().manual_seed(1))
    assert out.shape == pixels.shape and out.dtype == torch.uint8
    assert all(not torch.equal(out[row], pixels[row]) for row in range(4))
    again = augment_images(pixels, settings, torch.Generator().manual_seed(1))
    assert torch.equal(out, again), "the same draws give the same crops"


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentSettings(crop_scale=(0.8, 0.2))
    with pytest.raises(ValueError, match="crop_ratio"):
        AugmentSettings(crop_ratio=(0.0, 1.0))


def test_center_crop_keeps_the_aspect_and_cuts_out_the_middle() -> None:
    wide = torch.zeros(3, 20, 40, dtype=torch.uint8)
    wide[:, :, 10:30] = 255  # a bright middle half
    cropped = resize_square(wide, 10, "center_crop")
    stretched = resize_square(wide, 10, "stretch")
    assert cropped.shape == stretched.shape == (3, 10, 10)
    assert cropped.float().mean() > 240, "only the bright centre remains (edges softened by antialiasing)"
    assert stretched.float().mean() < 150, "stretching keeps the dark sides"
