"""Index bundles: faiss indexes of a split's images and captions, their id maps and metadata,
stamped with the model version they were built with, written atomically under one prefix."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmray import storage
from mmray.artifacts.manifests import INDEX_FORMAT_VERSION, INDEX_MANIFEST, INDEX_METADATA, read_index_manifest
from mmray.data.coco import CocoDataset
from mmray.errors import IndexBundleError, json_object, reading
from mmray.index.faiss_index import VectorIndex

MISSING_SHOWN = 5
"""Ids without metadata named in the error of a bundle that has them."""


@dataclass
class IndexBundle:
    """Loaded indexes (by corpus kind), metadata and the manifest of an index bundle."""

    indexes: dict[str, VectorIndex]
    metadata: dict[str, dict[str, Any]]
    manifest: dict[str, Any]
    uri: str

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    def check_model(self, model_version: str) -> None:
        """Refuse a model other than the one the index was built with."""
        if model_version != self.model_version:
            raise IndexBundleError(
                f"index bundle {self.uri} was built with model version {self.model_version}, "
                f"but the model given has version {model_version}; rebuild the index with this model"
            )


def corpus_metadata(dataset: CocoDataset) -> dict[str, dict[str, Any]]:
    """Id -> metadata maps: images (file name, uri, captions) and captions (text, image id)."""
    images = {
        str(r.image_id): {"file_name": r.file_name, "uri": r.image_uri, "captions": list(r.captions)}
        for r in dataset.records
    }
    captions = {
        str(cid): {"text": text, "image_id": r.image_id, "file_name": r.file_name}
        for r in dataset.records
        for cid, text in zip(r.caption_ids, r.captions, strict=True)
    }
    return {"images": images, "captions": captions}


def write_index_bundle(
    uri: str, indexes: dict[str, VectorIndex], metadata: dict[str, dict[str, Any]], manifest: dict[str, Any]
) -> None:
    """Write the bundle into a staging area, then publish it whole; `index.json` is written last. Metadata
    without an entry for an indexed id is refused before anything is written (every load would refuse it)."""
    for kind, index in indexes.items():
        missing = missing_metadata(index.ids, metadata.get(kind, {}))
        if missing:
            raise IndexBundleError(
                f"the {kind} index for {uri} holds {missing[0]} that its metadata has no {kind!r} entry for: "
                f"{missing[1]}; nothing was written (their hits would have no file name or text)"
            )
    with tempfile.TemporaryDirectory(prefix="mmray-index-") as tmp:
        staging = Path(tmp)
        for kind, index in indexes.items():
            index.save(staging / f"{kind}.faiss")
            np.save(staging / f"{kind}.ids.npy", index.ids)
        (staging / INDEX_METADATA).write_text(json.dumps(metadata))
        content = {
            "format_version": INDEX_FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "indexes": {kind: {"type": idx.kind, "size": idx.size, "dim": idx.dim} for kind, idx in indexes.items()},
            **manifest,
        }
        (staging / INDEX_MANIFEST).write_text(json.dumps(content, indent=2))
        storage.publish_dir(staging, uri, last=INDEX_MANIFEST)


def missing_metadata(ids: np.ndarray, entries: dict[str, Any]) -> tuple[str, str] | None:
    """The ids without an entry in `entries` (looked up as a search looks them up, by `str(id)`, in one pass of
    built-in maps): ("N ids", the first few of them), or None when every id has one."""
    listed = np.ravel(ids)
    present = np.fromiter(map(entries.__contains__, map(str, listed.tolist())), dtype=bool, count=listed.size)
    missing = listed[~present]
    if not missing.size:
        return None
    count = int(missing.size)
    more = f" (and {count - MISSING_SHOWN} more)" if count > MISSING_SHOWN else ""
    shown = ", ".join(str(i) for i in missing[:MISSING_SHOWN].tolist()) + more
    return f"{count} id{'s' if count > 1 else ''}", shown


def load_index_bundle(uri: str, use_gpu: bool = True) -> IndexBundle:
    """Load an index bundle from a directory or s3:// prefix; a damaged file is an error naming it."""
    manifest = read_index_manifest(uri)
    metadata_uri = storage.join(uri, INDEX_METADATA)
    with storage.local_copy(metadata_uri) as metadata_path, reading(metadata_uri, IndexBundleError):
        metadata = json_object(metadata_path.read_text())
        for corpus in ("images", "captions"):
            entries = metadata[corpus]
            if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
                raise TypeError(f"{corpus!r} must map each id to an object")
    indexes = {}
    for kind, info in manifest["indexes"].items():
        ids_uri, index_uri = storage.join(uri, f"{kind}.ids.npy"), storage.join(uri, f"{kind}.faiss")
        with storage.local_copy(ids_uri) as ids_path, reading(ids_uri, IndexBundleError):
            ids = np.load(ids_path)
            if ids.dtype.kind not in "iu":
                raise TypeError(f"ids of type {ids.dtype}, not integers")
        missing = missing_metadata(ids, metadata.get(kind, {}))
        if missing:  # a hit's file name and text come from metadata.json
            raise IndexBundleError(
                f"{ids_uri} names {missing[0]} that {metadata_uri} has no {kind!r} entry for: {missing[1]}; the "
                "bundle is damaged or was edited (its hits would have no file name or text): rebuild it with "
                "`mmray index`"
            )
        with storage.local_copy(index_uri) as index_path, reading(index_uri, IndexBundleError):
            indexes[kind] = VectorIndex.load(index_path, ids, info["type"], use_gpu=use_gpu)
            size, dim = indexes[kind].size, indexes[kind].dim
            if (size, dim) != (info.get("size"), info.get("dim")):
                raise ValueError(
                    f"it holds {size} vectors of dimension {dim}; {INDEX_MANIFEST} says {info.get('size')} of "
                    f"dimension {info.get('dim')}"
                )
    return IndexBundle(indexes=indexes, metadata=metadata, manifest=manifest, uri=uri)
