"""Frozen tower weights written once per run, not into every checkpoint.

A model's frozen part (parameters that do not train, buffers of modules kept in eval mode) is the same after
every epoch: a run writes it once to `<run>/frozen/<sha>.safetensors`, and each checkpoint's manifest names it
by content hash and relative path. A bundle exported to stand alone holds it as `frozen.safetensors`."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors, save as save_safetensors
from torch import nn

from mmray import storage
from mmray.errors import BundleError

FROZEN_DIR = "frozen"
BESIDE = "frozen.safetensors"
MANIFEST_KEY = "frozen_weights"


def frozen_state_names(model: nn.Module) -> set[str]:
    """State-dict keys of `model` (in train mode) that training never changes."""
    keys = set(model.state_dict())
    names = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    for prefix, module in model.named_modules():
        if not module.training:
            names.update(f"{prefix}.{name}" if prefix else name for name, _ in module.named_buffers(recurse=False))
    return names & keys


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of a state dict (contiguous CPU copies; equal states give equal bytes)."""
    return save_safetensors({name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()})


@dataclass(frozen=True)
class FrozenPart:
    """The frozen part of a model: its keys, and its content hash."""

    names: frozenset[str]
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.sha256[:32]}.safetensors"

    def reference(self) -> dict[str, Any]:
        """The manifest entry of a checkpoint written under `<run>/<checkpoint>/`."""
        return {"sha256": self.sha256, "path": f"../{FROZEN_DIR}/{self.file_name}", "tensors": len(self.names)}


def frozen_part(model: nn.Module) -> tuple[FrozenPart, bytes] | None:
    """The frozen part of a freshly built (train-mode) model and its bytes; None when all of it trains."""
    names = frozen_state_names(model)
    if not names:
        return None
    state = model.state_dict()
    data = state_bytes({name: state[name] for name in sorted(names)})
    return FrozenPart(frozenset(names), hashlib.sha256(data).hexdigest()), data


def write_once(run_dir: str, part: FrozenPart, data: bytes) -> str:
    """Store the frozen part under the run directory unless a file of that content is there."""
    uri = storage.join(run_dir, FROZEN_DIR, part.file_name)
    if not storage.exists(uri):
        storage.write_bytes(uri, data)
    return uri


def fetch_beside(bundle_uri: str, directory: Path, reference: dict[str, Any]) -> None:
    """Copy the frozen part beside a bundle downloaded from S3 (as `frozen.safetensors`) when it exists."""
    bucket, key = storage.split_s3(bundle_uri.rstrip("/"))
    source = f"{storage.S3_SCHEME}{bucket}/{posixpath.normpath(posixpath.join(key, str(reference['path'])))}"
    if not (directory / BESIDE).is_file() and storage.exists(source):
        storage.download_file(source, directory / BESIDE)


def _local_file(directory: Path, reference: dict[str, Any]) -> Path | None:
    """The frozen part of the bundle in `directory`: beside it, else at the path its manifest gives."""
    return next((p for p in (directory / BESIDE, (directory / str(reference["path"])).resolve()) if p.is_file()), None)


def frozen_state(directory: Path, reference: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen tensors a bundle references: beside it, at its relative path, or those `model`
    already holds when their hash matches (a training run that resumes has its pretrained towers)."""
    path = _local_file(directory, reference)
    if path is not None:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != reference["sha256"]:
            raise BundleError(f"{path} has content {digest[:16]}, not the frozen weights {reference['sha256'][:16]}")
        return dict(load_safetensors(data))
    held = frozen_part(model)
    if held is not None and held[0].sha256 == reference["sha256"]:
        state = model.state_dict()
        return {name: state[name] for name in held[0].names}
    raise BundleError(
        f"{directory} keeps its frozen weights in {reference['path']} (sha256 {reference['sha256'][:16]}), "
        f"which is not there nor beside it as {BESIDE}; copy the run's {FROZEN_DIR}/ directory with it, "
        "or make one that stands alone with `mmray export BUNDLE OUT`"
    )


def copy_beside(source: Path, target: Path, reference: dict[str, Any]) -> None:
    """Put the frozen part that the bundle at `source` references beside its copy at `target`."""
    path = _local_file(source, reference)
    if path is None:
        raise BundleError(f"{source} keeps its frozen weights in {reference['path']}, which is not there")
    (target / BESIDE).write_bytes(path.read_bytes())
