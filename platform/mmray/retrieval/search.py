"""Queries against an index bundle: text → images, image → captions or images, fused image + text."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmray import storage
from mmray.artifacts.index_bundle import IndexBundle, load_index_bundle
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.data.image_files import decode_image
from mmray.errors import IndexBundleError, QueryError
from mmray.models.embedding import EmbeddingModel, as_embedding_model

Target = Literal["images", "captions"]
logger = logging.getLogger(__name__)


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


class Searcher:
    """A model bundle and the index bundle built with it; refuses a pair whose versions differ."""

    def __init__(self, index: IndexBundle, model: LoadedBundle) -> None:
        index.check_model(model.version)
        self.index = index
        self.model = model
        self.embedder: EmbeddingModel = as_embedding_model(model.model, model.uri)

    @classmethod
    def open(cls, index_uri: str, model_uri: str | None = None) -> Searcher:
        index = load_index_bundle(index_uri)
        return cls(index, open_bundle(model_uri or index.manifest["model_bundle"]))

    @torch.no_grad()
    def embed_text(self, text: str) -> torch.Tensor:
        """The text's embedding (E,); a text longer than the tokenizer's length is cut, with a warning."""
        if not text.strip():
            raise QueryError("the query text is empty")
        tokens = self.model.processor.tokenize([text])
        if bool(tokens.truncated[0]):
            logger.warning("the query was cut to %d tokens (the model reads no more)", tokens.ids.shape[1])
        return self.embedder.embed_texts(tokens.ids, tokens.mask)[0]  # (E,)

    @torch.no_grad()
    def embed_image(self, image: Image.Image) -> torch.Tensor:
        processor = self.model.processor
        pixels = processor.pixels_from_pil(image).unsqueeze(0)  # (1, 3, S, S)
        return self.embedder.embed_images(processor.normalize(pixels))[0]  # (E,)

    def result_images(self, hits: list[Hit]) -> list[tuple[Image.Image, str, str]]:
        """Each hit's image (a caption's own image), a heading (rank, id, score) and its caption."""
        shown = []
        for hit in hits:
            uri, text = hit_image(self.index, hit)
            if uri:
                heading = f"#{hit.rank}  {hit.kind} {hit.id}  {hit.score:.3f}"
                shown.append((decode_image(storage.read_bytes(uri), uri), heading, text))
        return shown

    def search(
        self,
        text: str | None = None,
        image: Image.Image | None = None,
        k: int = 10,
        target: Target | None = None,
        alpha: float = 0.5,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """Top-k of `target` (default: images for text or fused queries, captions for an image alone)."""
        check_alpha(alpha)
        image_vector = self.embed_image(image) if image is not None else None
        text_vector = self.embed_text(text) if text is not None else None
        vector = fuse_query(image_vector, text_vector, alpha).float().numpy()  # (E,)
        return find(self.index, vector, k, default_target(text is not None, target), nprobe, ef_search)


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


def fuse_query(image: torch.Tensor | None, text: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """One modality's embedding (E,) as it is, or normalize(α·z_image + (1 − α)·z_text) for both."""
    if image is None and text is None:
        raise QueryError("a query needs a text, an image, or both")
    if image is None:
        return text  # type: ignore[return-value]
    if text is None:
        return image
    return F.normalize(alpha * image + (1.0 - alpha) * text, dim=-1)  # (E,)


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
