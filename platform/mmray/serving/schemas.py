"""The HTTP API's request bodies: typed, unknown fields refused, limits from the app's config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmray.config.serving import RequestLimits
from mmray.serving.calls import RequestError


class ApiBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedBody(ApiBody):
    """Texts and/or images (base64) to embed into the model's shared space."""

    texts: list[str] = Field(default_factory=list, description="texts to embed")
    images: list[str] = Field(default_factory=list, description="base64-encoded images (JPEG, PNG, ...)")
    model: str | None = Field(None, description="served model name; default: the one that embeds")


class ClassifyItemBody(ApiBody):
    image: str | None = Field(None, description="base64-encoded image")
    text: str | None = Field(None, description="text (e.g. a caption or a question about the image)")


class ClassifyBody(ApiBody):
    """Image + text items to classify with a fusion model's heads."""

    items: list[ClassifyItemBody] = Field(description="each item an image, a text, or both")
    top_k: int = Field(3, ge=1, le=100, description="classes listed per multi-class head")
    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="multi-label cut; default: the head's")
    model: str | None = None


class SearchBody(ApiBody):
    """A text, an image, or both (fused: normalize(α·z_image + (1 − α)·z_text))."""

    text: str | None = Field(None, description="query text")
    image: str | None = Field(None, description="base64-encoded query image")
    k: int = Field(10, description="results to return (1 to the app's max_k)")
    target: Literal["images", "captions"] | None = Field(
        None, description="what to find; default: images for text or fused queries, captions for an image alone"
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="image weight of a fused query")
    nprobe: int | None = Field(
        None, ge=1, description="IVF lists to probe (this request only; 1 to the app's max_nprobe)"
    )
    ef_search: int | None = Field(
        None, ge=1, description="HNSW search breadth (this request only; 1 to the app's max_ef_search)"
    )
    thumbnails: bool = Field(False, description="add each hit's image as a small JPEG data URL")


class GenerateImageBody(ApiBody):
    text: str = Field(description="the caption to draw")
    n: int = Field(1, ge=1, le=64, description="images to sample")
    temperature: float = Field(1.0, gt=0.0, le=10.0)
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="noise seed (equal seeds, equal images); default: a random one, returned"
    )
    model: str | None = None


class CaptionBody(ApiBody):
    images: list[str] = Field(description="base64-encoded images")
    beam: int = Field(1, ge=1, le=16)
    max_length: int | None = Field(None, ge=2, le=512, description="most tokens per caption, BOS and EOS included")
    model: str | None = None


class ReloadBody(ApiBody):
    """Bundles to swap in: named models (others keep theirs) and/or the index."""

    models: dict[str, str] = Field(default_factory=dict, description="name → model bundle URI")
    index: str | None = Field(None, description="index bundle URI")


def parse_body(model: type[ApiBody], data: Any, strict: bool = True) -> Any:
    """Validate a decoded body; the first problem becomes a 422 naming its field."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown field; fields: {', '.join(model.model_fields)}"
        elif "input" in error and not isinstance(error["input"], dict | list):
            message = f"{message} (got {str(error['input'])[:80]!r})"
        raise RequestError(message, field) from None


def check_text(text: str, field: str, limits: RequestLimits) -> None:
    if not text.strip():
        raise RequestError("is empty", field)
    if len(text) > limits.max_text_chars:
        raise RequestError(f"is {len(text)} characters; the limit is {limits.max_text_chars}", field, 413)


def check_count(count: int, field: str, limits: RequestLimits) -> None:
    if count == 0:
        raise RequestError("needs at least one entry", field)
    if count > limits.max_items:
        raise RequestError(f"has {count} entries; the limit is {limits.max_items}", field, 413)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` references inlined (for an OpenAPI request body)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
