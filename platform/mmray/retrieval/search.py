"""Queries against an index bundle with its model (`Searcher`, for `mmray search`): text → images, image →
captions or images, fused image + text; the index side is `queries.py`."""

from __future__ import annotations

import logging

import torch
from PIL import Image

from mmray import storage
from mmray.artifacts.index_bundle import IndexBundle, load_index_bundle
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.data.image_files import decode_image
from mmray.errors import QueryError
from mmray.models.embedding import EmbeddingModel, as_embedding_model
from mmray.retrieval.queries import Hit, Target, check_alpha, default_target, find, fuse_query, hit_image

logger = logging.getLogger(__name__)


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
        image_vector = self.embed_image(image).float().numpy() if image is not None else None  # (E,)
        text_vector = self.embed_text(text).float().numpy() if text is not None else None  # (E,)
        vector = fuse_query(image_vector, text_vector, alpha)  # (E,)
        return find(self.index, vector, k, default_target(text is not None, target), nprobe, ef_search)
