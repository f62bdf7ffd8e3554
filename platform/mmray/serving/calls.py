"""What the ingress sends to the model and retriever deployments, and what comes back: plain,
picklable values, one per HTTP request (a batch gathers several)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmray.errors import MmrayError


class RequestError(MmrayError):
    """A request the service cannot answer as asked: HTTP `status`, the `field` that was wrong."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message, field, status)
        self.message, self.field, self.status = message, field, status

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass
class EmbedCall:
    """Texts and encoded images to embed; `version` asks for a model version (searches do)."""

    texts: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    version: str | None = None
    model_uri: str | None = None


@dataclass
class EmbedResult:
    """L2-normalised vectors in request order, and which texts were cut to the tokenizer's length."""

    text_vectors: np.ndarray  # (T, E) float32
    image_vectors: np.ndarray  # (I, E) float32
    truncated: list[int]
    model_version: str


@dataclass
class ClassifyItem:
    image: bytes | None = None
    text: str | None = None


@dataclass
class ClassifyCall:
    """Items to classify with this request's own `top_k` and multi-label `threshold`."""

    items: list[ClassifyItem]
    top_k: int = 3
    threshold: float | None = None


@dataclass
class ClassifyResult:
    predictions: list[dict[str, Any]]  # per item: head name -> prediction
    model_version: str


@dataclass
class SearchCall:
    """One search: a text, an image or both (fused with `alpha`), and its own search settings."""

    text: str | None = None
    image: bytes | None = None
    k: int = 10
    target: str | None = None
    alpha: float = 0.5
    nprobe: int | None = None
    ef_search: int | None = None
    thumbnails: bool = False


@dataclass
class SearchResult:
    hits: list[dict[str, Any]]
    target: str
    model_version: str
    index_uri: str
    truncated: bool = False
    thumbnails_omitted: int = 0
    """Hits left without a thumbnail because the search read its limits.max_thumbnail_bytes."""


@dataclass
class GenerateCall:
    """Images of one caption: `n` samples at `temperature`, with noise from `seed`."""

    text: str
    n: int = 1
    temperature: float = 1.0
    seed: int = 0


@dataclass
class GenerateResult:
    images: list[bytes]  # PNG files
    seed: int
    model_version: str
    truncated: bool = False


@dataclass
class CaptionCall:
    """Encoded images to caption with this request's own beam width and length limit."""

    images: list[bytes]
    beam: int = 1
    max_length: int | None = None


@dataclass
class CaptionResult:
    captions: list[str]
    model_version: str
