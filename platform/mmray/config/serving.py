"""Arguments of mmray's Serve application: the bundles it serves, request limits, batching, access."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmray.config.base import Section
from mmray.data.image_header import max_image_pixels

EndpointGroup = Literal["embed", "classify", "generate", "caption", "search"]
ENDPOINT_GROUPS: tuple[EndpointGroup, ...] = ("embed", "classify", "generate", "caption", "search")


class RequestLimits(Section):
    """What one request may hold; anything beyond gets a 4xx naming the field."""

    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest request body (413 beyond)")
    max_image_pixels: int = Field(
        default_factory=max_image_pixels,
        ge=1,
        description="largest decoded image, width × height (default: MMRAY_MAX_IMAGE_PIXELS, else 40000000)",
    )
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest encoded image")
    max_items: int = Field(64, ge=1, description="most texts or images in one embed / classify request")
    max_text_chars: int = Field(2000, ge=1, description="longest text, in characters")
    max_k: int = Field(1000, ge=1, description="most results one search may ask for")
    max_nprobe: int = Field(4096, ge=1, description="most IVF lists one search may probe (its work grows with each)")
    max_ef_search: int = Field(
        4096, ge=1, description="largest HNSW search breadth one search may ask for (its memory and work grow with it)"
    )
    max_thumbnails: int = Field(32, ge=0, description="most hits of one search that get a thumbnail")
    max_thumbnail_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="most image bytes one search reads for its thumbnails"
    )
    max_caption_work: int = Field(
        8192,
        ge=1,
        description="beam × max_length × images one caption request may ask for (decoding work grows with each)",
    )


class BatchSettings(Section):
    """`@serve.batch` settings of the model deployments (a deployment's `user_config` can change them)."""

    max_batch_size: int = Field(32, ge=1, description="requests gathered into one model call (1: no batching)")
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=10.0, description="how long a batch waits to fill up")


class AuthSettings(Section):
    """API keys, in two scopes. Query keys: with any key set, every /v1 route needs `Authorization: Bearer
    <key>`. Admin keys: needed by what changes the app's state (`/v1/admin/reload`), and they query too; an
    app without admin keys refuses reloads. Keys are kept as SHA-256 hashes only. `mmray serve` turns the
    variables' keys into hashes before deploying; never pass keys through a runtime_env (Ray logs its env_vars)."""

    keys_env: str = Field("MMRAY_API_KEYS", description="environment variable holding comma-separated query keys")
    keys_file: str | None = Field(None, description="file of `sha256:<hex>` lines (`mmray api-key` makes one)")
    key_hashes: list[str] = Field(default_factory=list, description="`sha256:<hex>` hashes of accepted query keys")
    admin_keys_env: str = Field("MMRAY_ADMIN_KEYS", description="environment variable holding admin keys")
    admin_keys_file: str | None = Field(None, description="file of `sha256:<hex>` lines of admin keys")
    admin_key_hashes: list[str] = Field(default_factory=list, description="`sha256:<hex>` hashes of admin keys")

    @model_validator(mode="after")
    def _check_hashes(self) -> AuthSettings:
        for value in (*self.key_hashes, *self.admin_key_hashes):
            digest = value.removeprefix("sha256:")
            if not value.startswith("sha256:") or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
                raise ValueError(f"key_hashes: {value[:12]}… is not 'sha256:<64 hex digits>'")
        return self


class ServeAppConfig(Section):
    """The Serve application: named model bundles, an optional index bundle searched with the model
    whose version it carries, the endpoint groups to open, limits, batching and access control."""

    models: dict[str, str] = Field(
        description="name → model bundle (directory, s3:// prefix or training run); one deployment each"
    )
    index: str | None = Field(None, description="index bundle for /v1/search (directory or s3:// prefix)")
    endpoints: list[EndpointGroup] | None = Field(
        None, description="endpoint groups to open; default: every group some served model supports"
    )
    limits: RequestLimits = RequestLimits()
    batching: BatchSettings = BatchSettings()
    auth: AuthSettings = AuthSettings()
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: the replica's GPU when it has one")
    thumbnail_size: int = Field(160, ge=16, le=1024, description="longest side of result thumbnails")
    reload_timeout_s: float = Field(300.0, gt=0, le=86_400, description="how long a reload waits for every replica")
    allowed_roots: list[str] | None = Field(
        None,
        description="directories or s3:// prefixes a reload may load bundles from (anything else is a 403); "
        "default: the directories holding the bundles the app starts with",
    )

    @model_validator(mode="after")
    def _check(self) -> ServeAppConfig:
        if not self.models:
            raise ValueError("models: name at least one model bundle, e.g. {retrieval: runs/shapes-clip}")
        for name in self.models:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"models: name {name!r} must be letters, digits, '-' or '_'")
        if self.endpoints is not None and "search" in self.endpoints and self.index is None:
            raise ValueError("endpoints: 'search' needs an index bundle (set index)")
        return self
