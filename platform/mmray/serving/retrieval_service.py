"""One index bundle answering searches for query vectors; thumbnails of the images found."""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmray import storage
from mmray.artifacts.index_bundle import IndexBundle, load_index_bundle
from mmray.data.image_files import decode_image
from mmray.errors import IndexBundleError, MmrayError
from mmray.retrieval.queries import check_alpha, default_target, find, fuse_query, hit_image
from mmray.serving.calls import EmbedResult, RequestError, SearchCall, SearchResult

THUMBNAIL_READERS = 8
THUMBNAIL_CACHE = 512
"""Thumbnails kept per replica (the most recently used), so hits shown again cost no read."""


class RetrievalService:
    """An index bundle (faiss on the replica's GPU where faiss has one); search settings such as
    `nprobe` apply per call, never to the shared index."""

    def __init__(self, index: IndexBundle, thumbnail_size: int = 160, max_thumbnail_bytes: int | None = None) -> None:
        self.index = index
        self.thumbnail_size = thumbnail_size
        self.max_thumbnail_bytes = max_thumbnail_bytes  # image bytes one search may read; None: no limit
        self._thumbnails: OrderedDict[str, str | None] = OrderedDict()  # uri → data URL, the latest used last
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, uri: str, thumbnail_size: int = 160, max_thumbnail_bytes: int | None = None) -> RetrievalService:
        return cls(load_index_bundle(uri), thumbnail_size, max_thumbnail_bytes)

    @property
    def model_version(self) -> str:
        return self.index.model_version

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
            has = ", ".join(sorted(self.index.indexes))
            raise RequestError(f"this index bundle has no {target!r} index; it has {has}", "target")
        return target

    def search(self, call: SearchCall, embedded: EmbedResult) -> SearchResult:
        """Top-k for the call's query, whose text and image vectors are `embedded`."""
        target = self.check(call)
        if embedded.model_version != self.model_version:
            raise IndexBundleError(
                f"query embedded with model {embedded.model_version}, the index holds {self.model_version}"
            )
        text = embedded.text_vectors[0] if len(embedded.text_vectors) else None  # (E,)
        image = embedded.image_vectors[0] if len(embedded.image_vectors) else None  # (E,)
        vector = fuse_query(image, text, call.alpha)  # (E,)
        try:
            hits = find(self.index, vector, call.k, target, call.nprobe, call.ef_search)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RequestError(str(exc), "nprobe" if "nprobe" in str(exc) else "ef_search") from None
        rows = [hit.as_dict() for hit in hits]
        omitted = 0
        if call.thumbnails:
            pictures, omitted = self.thumbnails([hit_image(self.index, hit) for hit in hits])
            for row, picture in zip(rows, pictures, strict=True):
                row["thumbnail"] = picture
        return SearchResult(rows, target, self.model_version, self.index.uri, bool(embedded.truncated), omitted)

    def thumbnails(self, images: list[tuple[str | None, str]]) -> tuple[list[dict[str, str] | None], int]:
        """Each (image URI, caption)'s thumbnail, cached ones first, the others read 8 at a time until the search
        has read `max_thumbnail_bytes`; returns them and how many were left out for that budget."""
        found: list[dict[str, str] | None] = [None] * len(images)
        wanted: list[int] = []
        for i, (uri, caption) in enumerate(images):
            with self._cache_lock:
                cached = self._thumbnails.get(uri) if uri else None
                if uri in self._thumbnails:
                    self._thumbnails.move_to_end(uri)  # type: ignore[arg-type]
            if cached is not None:
                found[i] = {"data_url": cached, "caption": caption}
            elif uri:
                wanted.append(i)
        spent, omitted = 0, 0
        with ThreadPoolExecutor(max_workers=THUMBNAIL_READERS) as pool:
            for start in range(0, len(wanted), THUMBNAIL_READERS):
                if self.max_thumbnail_bytes is not None and spent >= self.max_thumbnail_bytes:
                    omitted = len(wanted) - start
                    break
                batch = wanted[start : start + THUMBNAIL_READERS]
                for i, (size, data_url) in zip(batch, pool.map(self._thumbnail_of, [images[i][0] for i in batch]),
                                               strict=True):  # fmt: skip
                    spent += size
                    if data_url is not None:
                        found[i] = {"data_url": data_url, "caption": images[i][1]}
        return found, omitted

    def _thumbnail_of(self, uri: str | None) -> tuple[int, str | None]:
        """(bytes read, a small JPEG data URL or None when the image cannot be read), kept in the cache."""
        if not uri:
            return 0, None
        try:
            data = storage.read_bytes(uri)
            image = decode_image(data, uri)
        except MmrayError:
            return 0, None
        image.thumbnail((self.thumbnail_size, self.thumbnail_size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data_url = f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}"
        with self._cache_lock:
            self._thumbnails[uri] = data_url
            while len(self._thumbnails) > THUMBNAIL_CACHE:
                self._thumbnails.popitem(last=False)
        return len(data), data_url
