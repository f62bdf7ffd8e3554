"""Bundle manifests read and checked without the model or index code (no torch, no faiss): the files of a
model bundle and its format check, a training run's pointers to its bundles, and an index bundle's manifest.
Their readers include processes that must start light: Ray Train's controller, Serve's HTTP ingress."""

from __future__ import annotations

from typing import Any

from mmray import storage
from mmray.errors import BundleError, IndexBundleError, json_object, reading

MANIFEST = "bundle.json"
MODEL_CONFIG = "model.yaml"
TASK_CONFIG = "task.yaml"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 2
BEST_MODEL = "best_model.json"
LATEST_MODEL = "latest_model.json"
_REFUSED_FORMATS = {
    1: "format 1 (mmray 0.1) pickled the weights and stored the whole job instead of the model config; "
    "retrain the model with this version",
}

INDEX_MANIFEST = "index.json"
INDEX_METADATA = "metadata.json"
INDEX_FORMAT_VERSION = 1


def check_format(manifest: dict[str, Any], where: str) -> None:
    """Refuse a manifest whose format this version cannot read, saying why."""
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{where}: {MANIFEST} has no integer format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where} has bundle format_version {version}, newer than this mmray reads ({FORMAT_VERSION}); "
            "upgrade mmray to load it"
        )
    if version in _REFUSED_FORMATS:
        raise BundleError(f"{where} has bundle format_version {version}: {_REFUSED_FORMATS[version]}")
    if version != FORMAT_VERSION:
        raise BundleError(f"{where} has unknown bundle format_version {version}; this mmray reads {FORMAT_VERSION}")


def run_pointer(run_dir: str, name: str) -> str | None:
    """The bundle a training run's pointer file (`best_model.json`, `latest_model.json`) names, if any."""
    pointer = storage.join(run_dir, name)
    if not storage.exists(pointer):
        return None
    with reading(pointer, BundleError):
        content = json_object(storage.read_text(pointer))
        in_run = content.get("in_run")
        if isinstance(in_run, str) and in_run and not in_run.startswith(("/", "..")):
            return storage.join(run_dir, in_run)  # where the run is now, wherever it was written
        return str(content["model_bundle"])


def holding_or_pointed(uri: str, held: str, pointer: str) -> str | None:
    """`uri` itself when it holds the file `held`, else the checkpoint its run's `pointer` names, if any."""
    return uri if storage.exists(storage.join(uri, held)) else run_pointer(uri, pointer)


def resolve_model_bundle(uri: str) -> str:
    """A model bundle's URI: `uri` itself, or the best bundle of the training run directory `uri`."""
    found = holding_or_pointed(uri, MANIFEST, BEST_MODEL)
    if found is None:
        raise BundleError(f"{uri} is not a model bundle ({MANIFEST} is missing) nor a training run ({BEST_MODEL})")
    return found


def read_index_manifest(uri: str) -> dict[str, Any]:
    """The manifest of the index bundle at `uri`, its format, index types, model version, bundle and split checked."""
    manifest_uri = storage.join(uri, INDEX_MANIFEST)
    if not storage.exists(manifest_uri):
        raise IndexBundleError(f"{uri} is not a complete index bundle: {INDEX_MANIFEST} is missing")
    with reading(manifest_uri, IndexBundleError):
        manifest = json_object(storage.read_text(manifest_uri))
        manifest["indexes"] = {
            str(kind): {**info, "type": str(info["type"])} for kind, info in manifest["indexes"].items()
        }
        for key in ("model_version", "model_bundle", "split"):
            manifest[key] = str(manifest[key])
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise IndexBundleError(
            f"{manifest_uri} has index format_version {version!r}; this mmray reads {INDEX_FORMAT_VERSION}"
        )
    return manifest
