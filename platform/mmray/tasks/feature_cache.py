"""Features of frozen towers computed once: a tower that never trains gives each image (or caption) the same
pooled vector every epoch, so a run keeps those vectors on its storage root under a hash of everything they
depend on (the tower's weights and config, the processor, the split's pixels or token ids)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors, save as save_safetensors
from torch import nn

from mmray import storage
from mmray.artifacts.frozen_weights import state_bytes
from mmray.errors import DataError, reading

logger = logging.getLogger(__name__)
CACHE_DIR = "feature-cache"


def is_frozen(tower: nn.Module) -> bool:
    """Whether a tower never changes in training: no parameter trains and it stays in eval mode."""
    return not tower.training and not any(p.requires_grad for p in tower.parameters())


def features_key(tower: nn.Module, tower_config: str, processor_fingerprint: str, inputs: list[torch.Tensor]) -> str:
    """A hash of everything a tower's features depend on."""
    digest = hashlib.sha256(state_bytes(tower.state_dict()))
    digest.update(tower_config.encode())
    digest.update(processor_fingerprint.encode())
    for tensor in inputs:
        digest.update(json.dumps([str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.contiguous().numpy().data)  # the buffer itself: no copy of a split-sized array
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class FrozenTowers:
    """What a task computes once from its frozen towers when the split is streamed: an encoder of images
    and / or of captions (the other None), and a hash of everything their features depend on."""

    key: str
    images: Callable[[torch.Tensor], torch.Tensor] | None
    """Normalised images (b, 3, S, S) on the model's device -> pooled features (b, D_img)."""
    captions: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    """Token ids and mask (c, L) on the model's device -> pooled features (c, D_txt)."""


def decided_by_rank_zero(value: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def cached_features(
    cache_root: str | None, key: str, what: str, compute: Callable[[], torch.Tensor], rank: int
) -> torch.Tensor:
    """The features under `key` in the cache, or computed (by every rank together) and stored by rank 0."""
    uri = storage.join(cache_root, CACHE_DIR, f"{key}.safetensors") if cache_root else None
    kept = None
    if uri is not None and rank == 0 and storage.exists(uri):
        try:
            kept = _features_in(uri)
        except DataError as exc:  # a damaged file: the features are computed again
            logger.warning("[mmray] %s: %s; computing them again", what, exc)
    if uri is not None and decided_by_rank_zero(kept is not None):
        features = kept if kept is not None else _features_in(uri)
        if rank == 0:
            logger.info("[mmray] %s: %d cached features read from %s", what, features.shape[0], uri)
        return features
    features = compute()
    if uri is not None and rank == 0:
        storage.write_bytes(uri, save_safetensors({"features": features.contiguous()}))
        logger.info("[mmray] %s: %d features computed once, kept at %s", what, features.shape[0], uri)
    return features


def _features_in(uri: str) -> torch.Tensor:
    with reading(uri, DataError):
        features: torch.Tensor = load_safetensors(storage.read_bytes(uri))["features"]
        return features
