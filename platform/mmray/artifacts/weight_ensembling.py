"""Weight-space ensembling of a zero-shot and a fine-tuned model (WiSE-FT, Wortsman et al. 2022):
θ = (1 − α)·θ₀ + α·θ₁ for every floating tensor, written as a bundle of its own."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmray import storage
from mmray.artifacts.manifests import MANIFEST
from mmray.artifacts.model_bundle import LoadedBundle, check_new_target, open_bundle, write_bundle
from mmray.errors import BundleError, ConfigError
from mmray.models.registry import build_model

PRETRAINED_KINDS = ("hf_dual_encoder",)
"""Model kinds whose config names the pretrained weights they start from, so θ₀ can be rebuilt from it."""


def interpolate_states(
    zero_shot: dict[str, torch.Tensor], fine_tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 − α)·θ₀ + α·θ₁ per floating tensor (α = 0 gives θ₀ and α = 1 gives θ₁ exactly); integer tensors
    (position ids, counters) must be equal in both and are kept. Keys and shapes must match."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    missing, extra = sorted(set(fine_tuned) - set(zero_shot)), sorted(set(zero_shot) - set(fine_tuned))
    if missing or extra:
        raise BundleError(
            f"the models differ in their tensors: only fine-tuned {missing[:5]}, only zero-shot {extra[:5]}"
        )
    mixed = {}
    for name, tuned in fine_tuned.items():
        start = zero_shot[name]
        if start.shape != tuned.shape:
            raise BundleError(
                f"{name}: shape {tuple(start.shape)} in the zero-shot model, {tuple(tuned.shape)} fine-tuned"
            )
        if tuned.is_floating_point():
            mixed[name] = start.to(tuned.dtype) * (1.0 - alpha) + tuned * alpha
        elif torch.equal(start, tuned):
            mixed[name] = tuned.clone()
        else:
            raise BundleError(f"{name}: an integer tensor that differs between the two models cannot be interpolated")
    return mixed


def zero_shot_model(fine_tuned: LoadedBundle, zero_shot_uri: str | None) -> nn.Module:
    """θ₀: the bundle at `zero_shot_uri`, else the fine-tuned bundle's model rebuilt from the pretrained
    weights its config names (an hf_dual_encoder's `pretrained`)."""
    if zero_shot_uri is not None:
        start = open_bundle(zero_shot_uri)
        if start.model_config.kind != fine_tuned.model_config.kind:
            raise BundleError(
                f"{zero_shot_uri} holds a {start.model_config.kind!r} model, the fine-tuned bundle a "
                f"{fine_tuned.model_config.kind!r} one"
            )
        if start.processor.fingerprint() != fine_tuned.processor.fingerprint():
            raise BundleError(f"{zero_shot_uri} preprocesses differently from {fine_tuned.uri} (another processor)")
        return start.model
    if fine_tuned.model_config.kind not in PRETRAINED_KINDS:
        raise ConfigError(
            f"{fine_tuned.uri} holds a {fine_tuned.model_config.kind!r} model, which names no pretrained weights; "
            f"give the zero-shot model's bundle (models of kind {', '.join(PRETRAINED_KINDS)} rebuild it themselves)"
        )
    return build_model(fine_tuned.model_config, fine_tuned.processor).eval()


def ensembled_model(zero_shot: nn.Module, fine_tuned: LoadedBundle, alpha: float) -> nn.Module:
    """A copy of the fine-tuned bundle's model holding (1 − α)·θ₀ + α·θ₁, in eval mode."""
    model = copy.deepcopy(fine_tuned.model)
    model.load_state_dict(interpolate_states(zero_shot.state_dict(), fine_tuned.model.state_dict(), alpha))
    return model.eval()


def write_ensemble(
    model: nn.Module,
    fine_tuned: LoadedBundle,
    target: str,
    record: dict[str, Any],
    metrics: dict[str, float] | None = None,
) -> str:
    """Write `model` (an `ensembled_model`) as a complete bundle at `target` (a new directory or s3:// prefix),
    with `record` (α and both sources) and the metrics measured for it; returns its model version."""
    check_new_target(target)
    extra = {"wise_ft": record, **({"metrics": metrics} if metrics else {})}
    with tempfile.TemporaryDirectory(prefix="mmray-wise-ft-") as tmp:
        staged = Path(tmp) / "bundle"
        version = write_bundle(
            staged, model, fine_tuned.model_config, fine_tuned.processor, fine_tuned.task_config, extra=extra
        )
        storage.publish_dir(staged, target, last=MANIFEST)
    return version
