"""Which bundles an app serves: model URIs with their versions and the index paired with one of them.
Checked from the manifests alone (no model is loaded), so a bad pair is refused before anything swaps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mmray import storage
from mmray.artifacts.manifests import MANIFEST, check_format, read_index_manifest, resolve_model_bundle
from mmray.config.serving import ENDPOINT_GROUPS
from mmray.errors import BundleError, IndexBundleError, StorageError, json_object, reading


@dataclass(frozen=True)
class ServedModel:
    uri: str
    version: str
    kind: str
    serves: tuple[str, ...]


@dataclass(frozen=True)
class ServedIndex:
    uri: str
    model_version: str
    model: str  # the name of the served model whose version the index carries
    created_at: str | None = None  # tells an index rebuilt in place from the one loaded


@dataclass(frozen=True)
class ServingState:
    """The bundles served now; `generation` grows by one at every reload."""

    models: dict[str, ServedModel]
    index: ServedIndex | None = None
    generation: int = 0


def read_model_manifest(uri: str) -> tuple[str, dict[str, Any]]:
    """A model bundle's resolved URI (a run directory names its best bundle) and its manifest."""
    try:
        resolved = resolve_model_bundle(uri)
        manifest_uri = storage.join(resolved, MANIFEST)
        with reading(manifest_uri, BundleError):
            manifest = json_object(storage.read_text(manifest_uri))
    except StorageError as exc:
        raise BundleError(f"model bundle {uri}: {exc}") from None
    check_format(manifest, resolved)
    return resolved, manifest


def absolute(uri: str) -> str:
    """Local paths made absolute (replicas may run elsewhere than the caller's directory)."""
    return uri if storage.is_s3(uri) else os.path.abspath(uri)


def _serves(manifest: dict[str, Any], where: str) -> tuple[str, ...]:
    """The endpoint groups a bundle answers, as its manifest lists them: the Ingress resolves a reload without
    the model code (torch). A bundle written before manifests listed them is looked up in the model registry."""
    listed = manifest.get("serves")
    if listed is None:
        from mmray.models.registry import model_kind

        return model_kind(str(manifest.get("model_kind"))).serves
    if not isinstance(listed, list) or not all(group in ENDPOINT_GROUPS for group in listed):
        raise BundleError(
            f"{where}: {MANIFEST} 'serves' must list endpoint groups of {ENDPOINT_GROUPS}, got {listed!r}"
        )
    return tuple(listed)


def resolve_state(models: dict[str, str], index: str | None, generation: int = 0) -> ServingState:
    """Read every manifest and pair the index with the served model of its version; refuse a pair
    whose versions differ, naming them all."""
    served = {}
    for name, uri in models.items():
        resolved, manifest = read_model_manifest(absolute(uri))
        kind = str(manifest.get("model_kind"))
        served[name] = ServedModel(resolved, str(manifest["model_version"]), kind, _serves(manifest, resolved))
    if index is None:
        return ServingState(served, None, generation)
    index = absolute(index)
    manifest = read_index_manifest(index)
    wanted = str(manifest["model_version"])
    partners = [name for name, model in served.items() if model.version == wanted]
    if not partners:
        offered = ", ".join(f"{name}={m.version} ({m.uri})" for name, m in served.items())
        raise IndexBundleError(
            f"index bundle {index} was built with model version {wanted}, but the served models have "
            f"versions {offered}; serve the model the index was built with, or rebuild the index"
        )
    return ServingState(served, ServedIndex(index, wanted, partners[0], manifest.get("created_at")), generation)


def model_for(state: ServingState, group: str, name: str | None) -> str:
    """The served model that answers `group`: the one named, else the index's partner when it can,
    else the first that can; a RequestError-worthy BundleError when none can."""
    if name is not None:
        if name not in state.models:
            raise BundleError(f"no served model is named {name!r}; served: {', '.join(state.models)}")
        if group not in state.models[name].serves:
            raise BundleError(f"model {name!r} ({state.models[name].kind}) does not serve {group}")
        return name
    if state.index is not None and group in state.models[state.index.model].serves:
        return state.index.model
    for candidate, model in state.models.items():
        if group in model.serves:
            return candidate
    kinds = ", ".join(f"{n} ({m.kind}: {', '.join(m.serves) or 'nothing'})" for n, m in state.models.items())
    raise BundleError(f"no served model answers {group}; served: {kinds}")
