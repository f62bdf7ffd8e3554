"""The retriever deployment: the index bundle of the app's state, a `Follower` of its `StateKeeper`; each query
embedded by the model replica of the index's version, then searched here. Its replicas load faiss and the index
but no model code (no torch)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from mmray.config.serving import RequestLimits
from mmray.serving.backend import surviving_replica_loss
from mmray.serving.calls import EmbedCall, RequestError, SearchCall, SearchResult
from mmray.serving.following import LOAD_WAIT_S, Follower, Handle
from mmray.serving.retrieval_service import RetrievalService
from mmray.serving.state import ServingState


@serve.deployment(
    max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25}, logging_config={"enable_access_log": False}
)
class RetrieverDeployment(Follower):
    """The index bundle; embeds each query through the model deployment of the index's version."""

    role = "retriever"

    async def __init__(  # type: ignore[misc]
        self, keeper: Handle, models: dict[str, Handle], thumbnail_size: int, limits: dict[str, Any]
    ) -> None:
        self._keeper, self._models, self._thumbnail_size = keeper, models, thumbnail_size
        self._limits = RequestLimits.model_validate(limits)
        self._current: tuple[RetrievalService, str, str] | None = None
        self._init_following()

    def _load(self, state: ServingState) -> tuple[RetrievalService, str, str]:
        assert state.index is not None
        if (
            self._current is not None
            and self._current[0].index.uri == state.index.uri
            and (self._current[0].index.manifest.get("created_at") == state.index.created_at)
        ):
            return self._current
        service = RetrievalService.open(state.index.uri, self._thumbnail_size, self._limits.max_thumbnail_bytes)
        if service.model_version != state.index.model_version:
            raise RuntimeError(f"{state.index.uri} now holds an index of model {service.model_version}, "
                               f"not {state.index.model_version}")  # fmt: skip
        for index in service.index.indexes.values():
            probe = np.zeros((1, index.dim), dtype=np.float32)  # (1, E)
            probe[0, 0] = 1.0
            index.search(probe, 1)
        return service, state.index.model, state.models[state.index.model].uri

    def _bundle(self, state: ServingState) -> str:
        return state.index.uri if state.index is not None else "no index"

    def _swap(self, state: ServingState, loaded: Any) -> None:
        self._current = loaded

    async def search(self, call: SearchCall) -> SearchResult | RequestError:
        if self._current is None:
            await asyncio.to_thread(self._loaded.wait, LOAD_WAIT_S)
        if self._current is None:
            return RequestError("the index is still loading; retry in a moment", None, 503)
        service, model_name, model_uri = self._current
        try:
            service.check(call)
            query = EmbedCall([call.text] if call.text is not None else [], [call.image] if call.image else [],
                              version=service.model_version, model_uri=model_uri)  # fmt: skip
            model = self._models[model_name]
            embedded = await surviving_replica_loss(lambda: model.embed.remote(query))
            if isinstance(embedded, RequestError):
                field = "image" if (embedded.field or "").startswith("images") else "text"
                return RequestError(embedded.message, field, embedded.status)
            return await asyncio.to_thread(service.search, call, embedded)
        except RequestError as exc:
            return exc

    def info(self) -> dict[str, Any]:
        if self._current is None:
            return {"loading": True, "generation": self._serving}
        return {**self._current[0].info(), "model": self._current[1], "generation": self._serving}
