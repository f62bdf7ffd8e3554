"""Model bundles: everything needed to rebuild and run a model anywhere, in a checked format.

A bundle is a directory (or s3:// prefix) holding
- `bundle.json`: the manifest (`format_version`, `model_version`, model and task kinds, metrics);
- `model.yaml`: the model config with its `kind`; `task.yaml`: the task it was trained for;
- the processor (`processor.json` and its tokenizer files);
- `model.safetensors`: the weights; plus whatever the model kind saves beside them.
`model_version` hashes the weights, the model config and the processor (tokenizer included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import TypeAdapter, ValidationError
from safetensors.torch import load as load_safetensors
from torch import nn

from mmray import storage
from mmray.artifacts.frozen_weights import (
    MANIFEST_KEY as FROZEN_KEY,
    FrozenPart,
    copy_beside,
    fetch_beside,
    frozen_state,
    state_bytes,
)
from mmray.artifacts.manifests import (
    FORMAT_VERSION,
    MANIFEST,
    MODEL_CONFIG,
    TASK_CONFIG,
    WEIGHTS,
    check_format,
    resolve_model_bundle,
)
from mmray.config.base import format_validation_error
from mmray.config.model import ModelConfig, ModelSection
from mmray.config.tasks import TaskConfig, TaskSection
from mmray.data.processor import Processor
from mmray.errors import BundleError, json_object, reading
from mmray.models.registry import model_kind
from mmray.models.weights import fit_problems, grow_token_embeddings, load_state_dict_strictly


def model_version(
    weights: bytes, model_config: ModelSection, processor: Processor, frozen_sha256: str | None = None
) -> str:
    """Content hash of weights (and the frozen part's hash), model config and processor: equal versions, same model."""
    digest = hashlib.sha256(weights)
    if frozen_sha256 is not None:
        digest.update(frozen_sha256.encode())
    digest.update(yaml.safe_dump(model_config.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(processor.fingerprint().encode())
    return digest.hexdigest()[:16]


def write_bundle(
    directory: Path,
    model: nn.Module,
    model_config: ModelSection,
    processor: Processor,
    task_config: TaskSection | None = None,
    extra: dict[str, Any] | None = None,
    frozen: FrozenPart | None = None,
) -> str:
    """Write a bundle into the local `directory`; returns the model version. With `frozen`, its
    tensors are left out and referenced (a checkpoint of a run that stores them once)."""
    directory.mkdir(parents=True, exist_ok=True)
    leave_out = frozen.names if frozen is not None else frozenset()
    weights = state_bytes({name: tensor for name, tensor in model.state_dict().items() if name not in leave_out})
    (directory / WEIGHTS).write_bytes(weights)
    (directory / MODEL_CONFIG).write_text(yaml.safe_dump(model_config.model_dump(mode="json"), sort_keys=False))
    if task_config is not None:
        (directory / TASK_CONFIG).write_text(yaml.safe_dump(task_config.model_dump(mode="json"), sort_keys=False))
    processor.save(directory)
    kind = model_kind(model_config.kind)
    kind.save_extras(model, model_config, directory)
    version = model_version(weights, model_config, processor, frozen.sha256 if frozen is not None else None)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "model_kind": model_config.kind,
        "serves": list(kind.serves),
        "task_kind": task_config.kind if task_config is not None else None,
        **({FROZEN_KEY: frozen.reference()} if frozen is not None else {}),
        **(extra or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return version


@contextlib.contextmanager
def _named_as(local: str | Path, uri: str) -> Iterator[None]:
    """A `BundleError` about the local copy `local` of a bundle names the bundle's `uri` instead."""
    try:
        yield
    except BundleError as exc:
        raise BundleError(str(exc).replace(str(local), uri)) from None


@contextlib.contextmanager
def local_bundle(uri: str) -> Iterator[Path]:
    """A local directory holding the bundle at `uri` (or a run's best bundle), downloaded from S3."""
    uri = resolve_model_bundle(uri)
    if not storage.is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="mmray-bundle-") as tmp, _named_as(tmp, uri):
        storage.download_dir(uri, tmp)
        reference = read_manifest(Path(tmp)).get(FROZEN_KEY)
        if reference is not None:
            fetch_beside(uri, Path(tmp), reference)
        yield Path(tmp)


@dataclass
class LoadedBundle:
    """A rebuilt model (eval mode) with its processor, configs and manifest."""

    model: nn.Module
    processor: Processor
    model_config: ModelSection
    task_config: TaskSection | None
    manifest: dict[str, Any]
    uri: str

    @property
    def version(self) -> str:
        return str(self.manifest["model_version"])


def _read_config(path: Path, annotation: Any) -> Any:
    with reading(path, BundleError):
        data = yaml.safe_load(path.read_text())
    try:
        return TypeAdapter(annotation).validate_python(data)
    except ValidationError as exc:
        raise BundleError(f"cannot read {path}: {format_validation_error(exc, str(path), data)}") from None


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: {MANIFEST} is missing")
    with reading(path, BundleError):
        manifest: dict[str, Any] = json_object(path.read_text())
    check_format(manifest, str(directory))
    return manifest


def _present(path: Path) -> bool:
    """A bundle file is there: anything readable but a directory (a file, or a pipe that streams one)."""
    return path.exists() and not path.is_dir()


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """A bundle's (or checkpoint's) own weights file, read once (it may be a pipe); NaN is refused."""
    path = directory / WEIGHTS
    if not _present(path):
        raise BundleError(f"{directory} is not a complete model bundle: {WEIGHTS} is missing")
    with reading(path, BundleError):
        state: dict[str, torch.Tensor] = load_safetensors(path.read_bytes())
        nan = [name for name, tensor in state.items() if tensor.is_floating_point() and bool(tensor.isnan().any())]
        if nan:
            raise ValueError(f"NaN in {', '.join(nan[:3])}{' and more' if len(nan) > 3 else ''}")
    return state


def load_weights(
    model: nn.Module, directory: Path, grow_vocabulary: bool = False, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Load a bundle's (or checkpoint's) weights (`state` where already read) into `model`; any mismatch
    names the keys. `grow_vocabulary`: token-embedding tables may have fewer rows than the model's (warm starts)."""
    state = read_weights(directory) if state is None else state
    # the frozen towers the weights leave out and reference (`frozen_weights.py`), if any
    reference = read_manifest(directory).get(FROZEN_KEY) if (directory / MANIFEST).is_file() else None
    if reference is not None:
        state = {**frozen_state(directory, reference, model), **state}
    if grow_vocabulary:
        state = grow_token_embeddings(state, model)
    load_state_dict_strictly(model, state, source=str(directory / WEIGHTS))


def _check_config_fits_weights(
    build: Callable[[], nn.Module], state: dict[str, torch.Tensor], directory: Path, frozen_apart: bool
) -> None:
    """The shapes the model config gives (its model built on torch's meta device, where nothing is allocated)
    against the weights' (`frozen_apart`: the frozen towers' keys are not among them): a config of other sizes
    is refused before the model is built for real."""
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except Exception:  # what cannot be built on the meta device is built, and named, as before
        return
    problems = fit_problems(expected, state, allow_missing=frozen_apart)
    if problems:
        raise BundleError(f"{directory / MODEL_CONFIG} does not fit {directory / WEIGHTS}: " + "; ".join(problems))


def warm_start_compatible(job_kind: str, bundle_kind: str) -> bool:
    """Whether a bundle of `bundle_kind` can initialise a model of `job_kind` (whole or a sub-module)."""
    return bundle_kind == job_kind or bundle_kind in model_kind(job_kind).warm_starts_from


def load_initial_weights(model: nn.Module, job_kind: str, directory: Path) -> None:
    """Warm start: a bundle of the model's own kind loads whole; a bundle of a kind the model warm-starts
    from (e.g. a dual encoder into a fusion model) loads into that sub-module. Words added to the
    bundle's vocabulary keep the model's fresh embedding rows."""
    bundle_kind = str(read_manifest(directory).get("model_kind"))
    if bundle_kind == job_kind:
        load_weights(model, directory, grow_vocabulary=True)
        return
    prefix = model_kind(job_kind).warm_starts_from.get(bundle_kind)
    if prefix is None:
        raise BundleError(f"{directory} holds a {bundle_kind!r} model, which cannot initialise a {job_kind!r} model")
    load_weights(model.get_submodule(prefix.rstrip(".")), directory, grow_vocabulary=True)


def read_bundle(directory: Path, uri: str | None = None) -> LoadedBundle:
    """Rebuild the model and processor of a local bundle directory, weights loaded, in eval mode."""
    manifest = read_manifest(directory)
    for name in (MODEL_CONFIG, WEIGHTS):
        if not _present(directory / name):
            raise BundleError(f"{directory} is not a complete model bundle: {name} is missing")
    model_config: ModelSection = _read_config(directory / MODEL_CONFIG, ModelConfig)
    task_path = directory / TASK_CONFIG
    task_config: TaskSection | None = _read_config(task_path, TaskConfig) if task_path.is_file() else None
    processor = Processor.load(directory)
    kind = model_kind(model_config.kind)
    config = kind.rebuild_config(model_config, directory)
    state = read_weights(directory)
    _check_config_fits_weights(
        lambda: kind.build(config, processor), state, directory, manifest.get(FROZEN_KEY) is not None
    )
    with reading(directory / MODEL_CONFIG, BundleError):
        model = kind.build(config, processor)
    load_weights(model, directory, state=state)
    model.eval()
    return LoadedBundle(model, processor, model_config, task_config, manifest, uri or str(directory))


def open_bundle(uri: str) -> LoadedBundle:
    """Rebuild the model of a bundle (or a training run's best bundle) at a path or s3:// URI."""
    resolved = resolve_model_bundle(uri)
    with local_bundle(resolved) as directory:
        return read_bundle(directory, resolved)


def read_processor(uri: str) -> tuple[Processor, ModelSection]:
    """The processor and model config of a bundle, without building the model."""
    with local_bundle(uri) as directory:
        read_manifest(directory)
        return Processor.load(directory), _read_config(directory / MODEL_CONFIG, ModelConfig)


def check_new_target(target: str) -> None:
    """Refuse a `target` that holds a bundle, or anything at all where it is local."""
    if storage.exists(storage.join(target, MANIFEST)) or (not storage.is_s3(target) and Path(target).exists()):
        raise BundleError(f"{target} already exists; write into a new directory or prefix")


def export_bundle(source: str, target: str) -> dict[str, Any]:
    """`mmray export`: copy the bundle at `source` (or a run's best) to `target` with everything it needs to
    load on its own (a run's frozen weights beside it); checked by loading the copy before it is published."""
    check_new_target(target)
    resolved = resolve_model_bundle(source)
    with local_bundle(resolved) as directory, tempfile.TemporaryDirectory(prefix="mmray-export-") as tmp:
        staged = Path(tmp) / "bundle"
        shutil.copytree(directory, staged)
        reference = read_manifest(directory).get(FROZEN_KEY)
        if reference is not None:
            copy_beside(directory, staged, reference)
        with _named_as(staged, resolved):
            version = read_bundle(staged).version
        size = sum(path.stat().st_size for path in staged.rglob("*") if path.is_file())
        storage.publish_dir(staged, target, last=MANIFEST)
    return {"bundle": target, "source": resolved, "model_version": version, "bytes": size}
