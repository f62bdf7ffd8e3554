"""One index bundle answering searches for query vectors; thumbnails of the images found."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch

from mmray import storage
from mmray.artifacts.index_bundle import IndexBundle, load_index_bundle
from mmray.data.image_files import decode_image
from mmray.errors import IndexBundleError, MmrayError
from mmray.retrieval.search import check_alpha, default_target, find, fuse_query, hit_image
from mmray.serving.calls import EmbedResult, RequestError, SearchCall, SearchResult


class RetrievalService:
    """An index bundle (faiss on the replica's GPU where faiss has one); search settings such as
    `nprobe` apply per call, never to the shared index."""

    def __init__(self, index: IndexBundle, thumbnail_size: int = 160) -> None:
        self.index = index
        self.thumbnail_size = thumbnail_size

    @classmethod
    def open(cls, uri: str, thumbnail_size: int = 160) -> RetrievalService:
        return cls(load_index_bundle(uri), thumbnail_size)

    @property
    def model_version(self) -> str:
        return self.index.model_version

    @property
    def model_uri(self) -> str:
        return str(self.index.manifest.get("model_bundle", ""))

    def info(self) -> dict[str, Any]:
        manifest = self.index.manifest
        return {
            "uri": self.index.uri,
            "model_version": self.model_version,
            "created_at": manifest.get("created_at"),
            "split": manifest.get("split"),
            "indexes": manifest.get("indexes"),
        }

    def check(self, call: SearchCall) -> str:
        """Refuse what the index cannot answer before anything is embedded; returns the target."""
        if call.text is None and call.image is None:
            raise RequestError("a search needs a text, an image, or both", "text")
        try:
            check_alpha(call.alpha)
        except ValueError as exc:
            raise RequestError(str(exc), "alpha") from None
        target = default_target(call.text is not None, call.target)  # type: ignore[arg-type]
        if target not in self.index.indexes:
            raise RequestError(
                f"this index bundle has no {target!r} index; it has {', '.join(sorted(self.index.indexes))}",
                "target",
            )
        return target

    def search(self, call: SearchCall, embedded: EmbedResult) -> SearchResult:
        """Top-k for the call's query, whose text and image vectors are `embedded`."""
        target = self.check(call)
        if embedded.model_version != self.model_version:
            raise IndexBundleError(
                f"query embedded with model {embedded.model_version}, the index holds {self.model_version}"
            )
        text = torch.from_numpy(embedded.text_vectors[0]) if len(embedded.text_vectors) else None  # (E,)
        image = torch.from_numpy(embedded.image_vectors[0]) if len(embedded.image_vectors) else None  # (E,)
        vector = fuse_query(image, text, call.alpha).numpy().astype(np.float32)  # (E,)
        try:
            hits = find(self.index, vector, call.k, target, call.nprobe, call.ef_search)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RequestError(str(exc), "nprobe" if "nprobe" in str(exc) else "ef_search") from None
        rows = [hit.as_dict() for hit in hits]
        if call.thumbnails:
            for row, hit in zip(rows, hits, strict=True):
                row["thumbnail"] = self.thumbnail(*hit_image(self.index, hit))
        return SearchResult(rows, target, self.model_version, self.index.uri, bool(embedded.truncated))

    def thumbnail(self, uri: str | None, caption: str) -> dict[str, str] | None:
        """A hit's image as a small JPEG data URL, with the caption to show under it."""
        if not uri:
            return None
        try:
            image = decode_image(storage.read_bytes(uri), uri)
        except MmrayError:
            return None
        image.thumbnail((self.thumbnail_size, self.thumbnail_size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        return {"data_url": f"data:image/jpeg;base64,{encoded}", "caption": caption}
