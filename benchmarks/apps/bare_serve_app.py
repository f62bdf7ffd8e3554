"""The benchmark's bare Serve app (`bare_serve_app:app`): proxy → FastAPI ingress → a second deployment
that echoes the body → back. No model and no checks: what Serve and HTTP themselves cost per request."""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI
from ray import serve

api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
class Echo:
    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        return body


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
@serve.ingress(api)
class BareIngress:
    def __init__(self, echo: Any) -> None:
        self.echo = echo

    @api.post("/v1/embed")
    async def embed(self, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return {"echo": await self.echo.remote(body)}


app = BareIngress.bind(Echo.bind())  # type: ignore[attr-defined]
