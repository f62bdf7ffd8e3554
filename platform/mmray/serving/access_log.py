"""Per-request observability of the HTTP API: a request id, one JSON access-log line per request, and a hook
that records counts, errors and latency per endpoint (Ray's metrics, on Serve)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("ray.serve.mmray.access")  # into Serve's replica logs (JSON with encoding: JSON)
REQUEST_ID = "x-request-id"
ROUTES = frozenset(
    {"/", "/healthz", "/readyz", "/docs", "/openapi.json", "/v1/models", "/v1/embed", "/v1/classify", "/v1/search",
     "/v1/generate/image", "/v1/caption", "/v1/admin/reload"}
)  # fmt: skip
"""Endpoints named as themselves in logs and metrics; any other path is `other` (bounded label values)."""

Recorder = Callable[[str, int, float], None]
"""(route, HTTP status, seconds) of each finished request."""


def app_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class AccessLog:
    """ASGI middleware: each request gets an id (the client's `X-Request-Id`, else a new one, echoed in the
    response), one JSON line in Serve's replica log (logger `ray.serve.mmray.access`) when it ends, and its
    route, status and latency recorded."""

    def __init__(self, app: ASGIApp, record: Recorder | None = None) -> None:
        self.app, self.record = app, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")[:64]
        request_id = given if given.isprintable() and given else uuid.uuid4().hex
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = app_path(scope)
            route = route if route in ROUTES else "other"
            access_logger.info(json.dumps({"request_id": request_id, "method": scope["method"], "route": route,
                                           "path": scope["path"][:200], "status": status,
                                           "ms": round(seconds * 1e3, 2)}))  # fmt: skip
            if self.record is not None:
                self.record(route, status, seconds)
