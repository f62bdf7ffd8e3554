"""Model bundles: weights + job config + tokenizer, enough to rebuild the model anywhere."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from mmray import storage
from mmray.config import JobSpec, to_yaml
from mmray.config.base import validate
from mmray.config.model import HuggingFaceConfig, ModelConfig
from mmray.models.dual_encoder import DualEncoder
from mmray.models.factory import build_model, load_tokenizer
from mmray.models.huggingface import save_architecture, saved_architecture
from mmray.models.tokenizers import Tokenizer

WEIGHTS = "model.pt"
JOB = "job.yaml"
MANIFEST = "bundle.json"
TRAIN_STATE = "train_state.pt"
HISTORY = "history.json"
FORMAT_VERSION = 1
FINAL_MODEL = "final_model.json"


class BundleError(ValueError):
    """A model bundle that is missing or incomplete."""


def _weights_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def model_version(weights: bytes, model_config_yaml: str) -> str:
    """Content hash of the weights and the model config: equal versions mean identical models."""
    digest = hashlib.sha256(weights)
    digest.update(model_config_yaml.encode())
    return digest.hexdigest()[:16]


def write_bundle(
    directory: Path,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    spec: JobSpec,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write weights, job config, tokenizer and manifest into `directory`; returns the model version."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = _weights_bytes(model)
    (directory / WEIGHTS).write_bytes(weights)
    (directory / JOB).write_text(to_yaml(spec))
    tokenizer.save(directory)
    if isinstance(spec.model.text, HuggingFaceConfig):
        save_architecture(model, directory)
    version = model_version(weights, yaml.safe_dump(spec.model.model_dump(mode="json"), sort_keys=True))
    manifest = {"format_version": FORMAT_VERSION, "model_version": version, **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return version


def resolve_model_bundle(uri: str) -> str:
    """A model bundle's URI: `uri` itself, or the final bundle of the training run directory `uri`."""
    if storage.exists(storage.join(uri, MANIFEST)):
        return uri
    pointer = storage.join(uri, FINAL_MODEL)
    if storage.exists(pointer):
        return str(json.loads(storage.read_text(pointer))["model_bundle"])
    raise BundleError(f"{uri} is not a model bundle ({MANIFEST} is missing) nor a training run ({FINAL_MODEL})")


@contextlib.contextmanager
def local_bundle(uri: str) -> Iterator[Path]:
    """A local directory holding the bundle at `uri` (or a run's final bundle), downloaded from S3."""
    uri = resolve_model_bundle(uri)
    if not storage.is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="mmray-bundle-") as tmp:
        storage.download_dir(uri, tmp)
        yield Path(tmp)


@dataclass
class LoadedBundle:
    model: DualEncoder
    tokenizer: Tokenizer
    spec: JobSpec
    manifest: dict[str, Any]


def read_bundle(directory: Path) -> LoadedBundle:
    """Rebuild the model and tokenizer of a local bundle directory, weights loaded, in eval mode."""
    for name in (WEIGHTS, JOB, MANIFEST):
        if not (directory / name).is_file():
            raise BundleError(f"{directory} is not a complete model bundle: {name} is missing")
    spec = validate(JobSpec, yaml.safe_load((directory / JOB).read_text()), str(directory / JOB))
    tokenizer = load_tokenizer(spec.model, directory)
    model = build_model(_without_initial_weights(spec, directory), tokenizer)
    state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    manifest = json.loads((directory / MANIFEST).read_text())
    return LoadedBundle(model=model, tokenizer=tokenizer, spec=spec, manifest=manifest)


def open_bundle(uri: str) -> LoadedBundle:
    """Rebuild the model of a bundle (or a training run's final bundle) at a path or s3:// URI."""
    with local_bundle(uri) as directory:
        return read_bundle(directory)


def _without_initial_weights(spec: JobSpec, directory: Path) -> ModelConfig:
    """The model config with initial weights removed: the bundle's own weights replace them."""
    text = spec.model.text
    if isinstance(text, HuggingFaceConfig):
        text = text.model_copy(update={"pretrained": None, "architecture": saved_architecture(directory)})
    else:
        text = text.model_copy(update={"weights": None})
    image = spec.model.image.model_copy(update={"weights": None})
    return spec.model.model_copy(update={"image": image, "text": text})
