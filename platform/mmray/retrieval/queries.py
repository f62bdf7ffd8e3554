"""Queries against an index bundle's indexes, without the model: a query vector fused from its image and
text embeddings, the top-k hits with their metadata. The serving retriever answers with these alone (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mmray.artifacts.index_bundle import IndexBundle
from mmray.errors import IndexBundleError, QueryError

Target = Literal["images", "captions"]


@dataclass
class Hit:
    """One result: rank, id, score and the metadata of the image or caption found."""

    rank: int
    kind: str
    id: int
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hit_image(bundle: IndexBundle, hit: Hit) -> tuple[str | None, str]:
    """The URI of a hit's image (a caption's own image) and the caption to show with it."""
    entry = bundle.metadata.get("images", {}).get(
        str(hit.id if hit.kind == "image" else hit.metadata.get("image_id")), {}
    )
    uri = hit.metadata.get("uri") or entry.get("uri")
    return uri, str(hit.metadata.get("text") or (entry.get("captions") or [""])[0])


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise QueryError(f"alpha must lie in [0, 1], got {alpha}")


def fuse_query(image: np.ndarray | None, text: np.ndarray | None, alpha: float) -> np.ndarray:
    """A new float32 query vector (E,), also from read-only arrays (Ray's object store): one modality's embedding
    as it is, or normalize(α·z_image + (1 − α)·z_text) for both."""
    if image is None and text is None:
        raise QueryError("a query needs a text, an image, or both")
    if image is None or text is None:
        return np.array(text if image is None else image, dtype=np.float32)
    fused = alpha * np.asarray(image, dtype=np.float32) + (1.0 - alpha) * np.asarray(text, dtype=np.float32)  # (E,)
    return fused / max(float(np.linalg.norm(fused)), 1e-12)  # float32: a Python scalar keeps the array's dtype


def default_target(has_text: bool, target: Target | None) -> Target:
    """Images for text or fused queries, captions for an image alone, unless `target` says."""
    return target or ("images" if has_text else "captions")


def find(
    bundle: IndexBundle,
    vector: np.ndarray,
    k: int,
    target: Target,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> list[Hit]:
    """Top-k of the bundle's `target` index for one query vector (E,), with the hits' metadata."""
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    if target not in bundle.indexes:
        raise IndexBundleError(f"the index bundle has no {target!r} index; it has {sorted(bundle.indexes)}")
    scores, ids = bundle.indexes[target].search(vector[None, :], k, nprobe=nprobe, ef_search=ef_search)
    metadata = bundle.metadata.get(target, {})
    return [
        Hit(rank=rank + 1, kind=target[:-1], id=int(i), score=float(s), metadata=metadata.get(str(int(i)), {}))
        for rank, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))
        if i >= 0
    ]
