"""The HTTP API (FastAPI) over the Serve backend: routes, body parsing (JSON or multipart), limits, API keys,
and JSON errors. Bad input always gets a 4xx naming the field; nothing a client sends yields a 500."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

from mmray.config.serving import ServeAppConfig
from mmray.errors import MmrayError
from mmray.serving.access_log import AccessLog, Recorder, app_path
from mmray.serving.auth import Access, under_roots
from mmray.serving.backend import ServeBackend
from mmray.serving.calls import (
    CaptionCall,
    CaptionResult,
    ClassifyCall,
    ClassifyItem,
    ClassifyResult,
    EmbedCall,
    EmbedResult,
    GenerateCall,
    GenerateResult,
    RequestError,
    SearchCall,
    SearchResult,
)
from mmray.serving.page import search_page
from mmray.serving.schemas import (
    ApiBody,
    CaptionBody,
    ClassifyBody,
    EmbedBody,
    GenerateImageBody,
    ReloadBody,
    SearchBody,
    check_count,
    check_text,
    inline_schema,
    parse_body,
)
from mmray.serving.state import model_for
from mmray.serving.uploads import check_image, from_base64

logger = logging.getLogger(__name__)


class RequireApiKey:
    """ASGI middleware: /v1 routes answer 401 without a valid `Authorization: Bearer <key>`; /v1/admin routes
    answer 403 to a query key (they need an admin key)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = app_path(scope)
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            error = None
            if route.startswith("/v1/admin/") and not self.access.may_administer(authorization):
                if not self.access.admin.enabled:
                    error = RequestError("this app has no admin keys (MMRAY_ADMIN_KEYS or auth.admin_keys_file), "
                                         "so nothing may change what it serves", "Authorization", 403)  # fmt: skip
                elif self.access.query.enabled and self.access.query.allows(authorization):
                    error = RequestError("this route needs an admin key; a query key cannot change what the app "
                                         "serves", "Authorization", 403)  # fmt: skip
                else:
                    error = RequestError("a valid admin key is needed: Authorization: Bearer <key>",
                                         "Authorization", 401)  # fmt: skip
            elif route.startswith("/v1/") and not self.access.may_query(authorization):
                error = RequestError("a valid API key is needed: Authorization: Bearer <key>", "Authorization", 401)
            if error is not None:
                await _error(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(exc: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is {declared} bytes; the limit is {limit}", "body", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over the limit of {limit} bytes", "body", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_fields(
    request: Request, body: bytes, list_fields: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A multipart form as a body dict (repeated or listed fields lists) and its files by field path."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_part_size=len(body) + 1).parse()
    except MultiPartException as exc:
        raise RequestError(f"malformed multipart body: {exc.message}", "body", 400) from None
    data: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for key, value in form.multi_items():
        if key not in list_fields and key in data:
            raise RequestError("is given more than once", key)
        path = f"{key}[{len(data.get(key, []))}]" if key in list_fields else key
        content: Any = value
        if isinstance(value, UploadFile):
            files[path], content = await value.read(), ""
        if key in list_fields:
            data.setdefault(key, []).append(content)
        else:
            data[key] = content
    return data, files


async def parse_request(
    request: Request, model: type[ApiBody], limits_bytes: int, list_fields: tuple[str, ...] = ()
) -> tuple[Any, dict[str, bytes]]:
    """The validated body and the uploads it carried as files (multipart) by field path."""
    body = await _read_body(request, limits_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        data, files = await _form_fields(request, body, list_fields)
        return parse_body(model, {k: v for k, v in data.items() if v != "" or k in files}, strict=False), files
    if content_type and not content_type.startswith("application/json"):
        raise RequestError(f"content type {content_type!r}; send application/json or multipart/form-data", "body", 415)
    if not body:
        raise RequestError("the body is empty; send a JSON object", "body", 400)
    try:
        data = json.loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or a number of more than 4300 digits
        raise RequestError(f"the body is not valid JSON: {exc}", "body", 400) from None
    except RecursionError:
        raise RequestError("the body is not valid JSON: it is nested too deeply", "body", 400) from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object", "body", 400)
    return parse_body(model, data), {}


def _image_bytes(value: str, files: dict[str, bytes], field: str, config: ServeAppConfig) -> bytes:
    """An image given as base64 in JSON or as a file part (its field then ""), checked (size, header, pixels)."""
    data = files[field] if field in files else from_base64(value, field)
    check_image(data, field, config.limits)
    return data


def build_api(
    backend: ServeBackend, config: ServeAppConfig, access: Access, roots: list[str], record: Recorder | None = None
) -> FastAPI:
    """The FastAPI app: the search page at `/`, `/healthz` and `/readyz`, and the `/v1` routes; reloads
    load bundles from under `roots` only; every request logged as one JSON line and passed to `record`."""
    api = FastAPI(
        title="mmray",
        description="Multimodal embedding, classification, generation, captioning and search.",
        version="1",
    )
    limits = config.limits
    enabled = set(config.endpoints) if config.endpoints is not None else None

    @api.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc)

    @api.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code)

    @api.exception_handler(MmrayError)
    async def _user_error(_: Request, exc: MmrayError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": None}, status_code=409)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}", "field": None}, status_code=500)

    api.add_middleware(RequireApiKey, access=access)
    api.add_middleware(AccessLog, record=record)  # outermost: sees refused requests too

    def opened(group: str) -> None:
        if enabled is not None and group not in enabled:
            raise RequestError(f"the {group} endpoints are not opened on this app (endpoints: {sorted(enabled)})",
                               None, 404)  # fmt: skip

    async def served_model(group: str, name: str | None) -> str:
        opened(group)
        try:
            return model_for(await backend.state(), group, name)
        except MmrayError as exc:
            raise RequestError(str(exc), "model", 404) from None

    def body_of(model: type[ApiBody]) -> dict[str, Any]:
        schema = inline_schema(model)
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(search_page(access.enabled))

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The app answers; `ready` says whether every replica serves its bundles (see /readyz)."""
        readiness = await backend.readiness()
        return {"status": "ok", "ready": readiness["ready"], "generation": readiness["generation"]}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once every replica serves the committed bundles; 503 while any loads them."""
        readiness = await backend.readiness()
        return JSONResponse(readiness, status_code=200 if readiness["ready"] else 503)

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return await backend.describe()

    @api.post("/v1/embed", openapi_extra=body_of(EmbedBody))
    async def embed(request: Request) -> dict[str, Any]:
        body, files = await parse_request(request, EmbedBody, limits.max_body_bytes, ("texts", "images"))
        images = [_image_bytes(v, files, f"images[{i}]", config) for i, v in enumerate(body.images)]
        check_count(len(body.texts) + len(images), "texts", limits)
        for i, text in enumerate(body.texts):
            check_text(text, f"texts[{i}]", limits)
        name = await served_model("embed", body.model)
        result: EmbedResult = await backend.call("embed", EmbedCall(list(body.texts), images), name)
        return {
            "model": name,
            "model_version": result.model_version,
            "dim": int(result.text_vectors.shape[1] if len(body.texts) else result.image_vectors.shape[1]),
            "text_embeddings": result.text_vectors.tolist(),
            "image_embeddings": result.image_vectors.tolist(),
            "truncated_texts": result.truncated,
        }

    @api.post("/v1/classify", openapi_extra=body_of(ClassifyBody))
    async def classify(request: Request) -> dict[str, Any]:
        body, files = await parse_request(request, ClassifyBody, limits.max_body_bytes)
        check_count(len(body.items), "items", limits)
        items = []
        for i, item in enumerate(body.items):
            if item.text is not None:
                check_text(item.text, f"items.{i}.text", limits)
            image = _image_bytes(item.image, files, f"items.{i}.image", config) if item.image is not None else None
            items.append(ClassifyItem(image, item.text))
        name = await served_model("classify", body.model)
        result: ClassifyResult = await backend.call("classify", ClassifyCall(items, body.top_k, body.threshold), name)
        return {"model": name, "model_version": result.model_version, "predictions": result.predictions}

    @api.post("/v1/search", openapi_extra=body_of(SearchBody))
    async def search(request: Request) -> dict[str, Any]:
        opened("search")
        body, files = await parse_request(request, SearchBody, limits.max_body_bytes)
        for field, value, most in (("k", body.k, limits.max_k), ("nprobe", body.nprobe, limits.max_nprobe),
                                   ("ef_search", body.ef_search, limits.max_ef_search)):  # fmt: skip
            if value is not None and not 1 <= value <= most:
                raise RequestError(f"must lie in 1..{most}, got {value}", field)
        if body.thumbnails and body.k > limits.max_thumbnails:
            raise RequestError(f"thumbnails come with at most {limits.max_thumbnails} hits (limits.max_thumbnails); "
                               f"ask for k ≤ {limits.max_thumbnails} or thumbnails: false", "k")  # fmt: skip
        if body.text is not None:
            check_text(body.text, "text", limits)
        image = _image_bytes(body.image, files, "image", config) if body.image is not None else None
        if body.text is None and image is None:
            raise RequestError("a search needs a text, an image, or both", "text")
        call = SearchCall(body.text, image, body.k, body.target, body.alpha, body.nprobe, body.ef_search,
                          body.thumbnails)  # fmt: skip
        result: SearchResult = await backend.call("search", call)
        return {
            "target": result.target,
            "model_version": result.model_version,
            "index": result.index_uri,
            "query_truncated": result.truncated,
            **({"thumbnails_omitted": result.thumbnails_omitted} if result.thumbnails_omitted else {}),
            "hits": result.hits,
        }

    @api.post("/v1/generate/image", openapi_extra=body_of(GenerateImageBody))
    async def generate_image(request: Request) -> dict[str, Any]:
        body, _ = await parse_request(request, GenerateImageBody, limits.max_body_bytes)
        check_text(body.text, "text", limits)
        name = await served_model("generate", body.model)
        seed = body.seed if body.seed is not None else secrets.randbits(31)
        call = GenerateCall(body.text, body.n, body.temperature, seed)
        result: GenerateResult = await backend.call("generate", call, name)
        return {
            "model": name,
            "model_version": result.model_version,
            "seed": result.seed,
            "text_truncated": result.truncated,
            "images": [f"data:image/png;base64,{base64.b64encode(png).decode()}" for png in result.images],
        }

    @api.post("/v1/caption", openapi_extra=body_of(CaptionBody))
    async def caption(request: Request) -> dict[str, Any]:
        body, files = await parse_request(request, CaptionBody, limits.max_body_bytes, ("images",))
        images = [_image_bytes(value, files, f"images[{i}]", config) for i, value in enumerate(body.images)]
        check_count(len(images), "images", limits)
        name = await served_model("caption", body.model)
        call = CaptionCall(images, body.beam, body.max_length)
        result: CaptionResult = await backend.call("caption", call, name)
        return {"model": name, "model_version": result.model_version, "captions": result.captions}

    @api.post("/v1/admin/reload", openapi_extra=body_of(ReloadBody))
    async def reload(request: Request) -> dict[str, Any]:
        body, _ = await parse_request(request, ReloadBody, limits.max_body_bytes)
        if not body.models and body.index is None:
            raise RequestError("name models and/or an index to load", "models")
        named = {f"models.{name}": uri for name, uri in body.models.items()}
        for field, uri in {**named, **({"index": body.index} if body.index else {})}.items():
            if not under_roots(uri, roots):
                raise RequestError(f"{uri} is outside the directories this app may load from "
                                   f"({', '.join(roots)}; serving.allowed_roots)", field, 403)  # fmt: skip
        return await backend.reload(dict(body.models), body.index)

    return api
