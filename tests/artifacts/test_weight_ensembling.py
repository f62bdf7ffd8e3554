"""WiSE-FT's interpolation: (1 − α)·θ₀ + α·θ₁ per floating tensor, exact at both ends, refusing models
that differ in their tensors."""

from __future__ import annotations

import pytest
import torch

from mmray.artifacts.weight_ensembling import interpolate_states
from mmray.errors import BundleError, ConfigError


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    zero_shot = {"w": torch.randn(3, 4, generator=generator), "ids": torch.arange(5)}
    fine_tuned = {"w": torch.randn(3, 4, generator=generator), "ids": torch.arange(5)}
    return zero_shot, fine_tuned


def test_interpolation_is_exact_at_both_ends_and_linear_between() -> None:
    zero_shot, fine_tuned = _states()
    assert torch.equal(interpolate_states(zero_shot, fine_tuned, 0.0)["w"], zero_shot["w"])
    assert torch.equal(interpolate_states(zero_shot, fine_tuned, 1.0)["w"], fine_tuned["w"])
    quarter = interpolate_states(zero_shot, fine_tuned, 0.25)
    assert torch.allclose(quarter["w"], 0.75 * zero_shot["w"] + 0.25 * fine_tuned["w"])
    assert torch.equal(quarter["ids"], torch.arange(5)), "integer tensors are kept"


def test_models_that_differ_are_refused() -> None:
    zero_shot, fine_tuned = _states()
    with pytest.raises(ConfigError, match=r"alpha must lie in \[0, 1\], got 1.5"):
        interpolate_states(zero_shot, fine_tuned, 1.5)
    with pytest.raises(BundleError, match=r"only fine-tuned \['extra'\]"):
        interpolate_states(zero_shot, {**fine_tuned, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(BundleError, match=r"w: shape \(3, 4\) in the zero-shot model, \(4, 3\) fine-tuned"):
        interpolate_states(zero_shot, {**fine_tuned, "w": torch.zeros(4, 3)}, 0.5)
    with pytest.raises(BundleError, match="ids: an integer tensor that differs"):
        interpolate_states(zero_shot, {**fine_tuned, "ids": torch.arange(5) + 1}, 0.5)
