"""The app's HTTP entry deployment: the FastAPI routes of `api.py` over handles to the keeper, the models
and the retriever, and the request metrics it records on Ray's metrics."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from mmray.config.serving import ServeAppConfig
from mmray.serving.access_log import Recorder
from mmray.serving.api import build_api
from mmray.serving.auth import Access
from mmray.serving.backend import ServeBackend
from mmray.serving.following import Handle

logger = logging.getLogger("ray.serve")


def request_metrics() -> Recorder:
    """Per-endpoint request counts, errors and latency on Ray's metrics (exported in Prometheus format by each
    node's metrics agent, as Serve's own are): mmray_requests_total and mmray_request_errors_total by route and
    status, mmray_request_seconds by route."""
    from ray.util import metrics

    requests = metrics.Counter("mmray_requests_total", "HTTP requests answered", tag_keys=("route", "status"))
    errors = metrics.Counter("mmray_request_errors_total", "requests answered 4xx or 5xx", tag_keys=("route", "status"))
    latency = metrics.Histogram("mmray_request_seconds", "time to answer a request",
                                boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
                                tag_keys=("route",))  # fmt: skip

    def record(route: str, status: int, seconds: float) -> None:
        tags = {"route": route, "status": str(status)}
        requests.inc(1.0, tags=tags)
        if status >= 400:
            errors.inc(1.0, tags=tags)
        latency.observe(seconds, tags={"route": route})

    return record


@serve.deployment(
    max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.25}, logging_config={"enable_access_log": False}
)
@serve.ingress()
class Ingress:
    """The HTTP entry: FastAPI routes over handles to the keeper, the models and the retriever."""

    def __init__(
        self,
        config: dict[str, Any],
        key_hashes: list[str],
        admin_key_hashes: list[str],
        roots: list[str],
        keeper: Handle,
        models: dict[str, Handle],
        retriever: Handle | None,
    ) -> None:
        settings = ServeAppConfig.model_validate(config)
        access = Access(key_hashes, admin_key_hashes)
        if not access.enabled:
            logger.warning("no query keys are set: every /v1 query route is open to anyone who can reach this app")
        backend = ServeBackend(keeper, models, retriever, settings.reload_timeout_s)
        self._api = build_api(backend, settings, access, roots, request_metrics())

    def __serve_build_asgi_app__(self) -> Any:
        return self._api
