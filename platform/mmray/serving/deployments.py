"""Thin Ray Serve deployments over the serving classes.

- `StateKeeper` (one replica) holds which bundles are served now (`ServingState`) and which replicas
  have loaded them; a reload replaces the state there.
- `ModelDeployment` (one per served model) and `RetrieverDeployment` follow the keeper: when its
  generation changes they load the new bundle beside the old one, then swap, so requests already
  running finish on the bundle they started with. A model replica keeps the previous version, and a
  search asks for the version its index carries, so a search never mixes two models' spaces.
- `Ingress` is the FastAPI app (see `api.py`) over handles to the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from mmray.config.serving import BatchSettings, ServeAppConfig
from mmray.serving.api import build_api
from mmray.serving.auth import KeyChecker
from mmray.serving.backend import ServeBackend
from mmray.serving.calls import (
    CaptionCall,
    CaptionResult,
    ClassifyCall,
    ClassifyResult,
    EmbedCall,
    EmbedResult,
    GenerateCall,
    GenerateResult,
    RequestError,
    SearchCall,
    SearchResult,
)
from mmray.serving.model_service import ModelService
from mmray.serving.retrieval_service import RetrievalService
from mmray.serving.state import ServedIndex, ServingState

logger = logging.getLogger("ray.serve")
Handle = DeploymentHandle[Any]
POLL_S = 0.5
LIVE_S = 5.0


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=10_000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class StateKeeper:
    """The served bundles and each following replica's last acknowledged generation."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.acks: dict[str, tuple[str, int, float]] = {}

    def current(self) -> ServingState:
        return self.state

    def replace(self, state: ServingState) -> ServingState:
        self.state = replace(state, generation=self.state.generation + 1)
        return self.state

    def acknowledge(self, replica: str, role: str, generation: int) -> None:
        self.acks[replica] = (role, generation, time.monotonic())

    def progress(self, generation: int) -> dict[str, int]:
        """Live replicas (acknowledged lately) and how many of them have loaded `generation`."""
        now = time.monotonic()
        live = [ack for ack in self.acks.values() if now - ack[2] < LIVE_S]
        return {"replicas": len(live), "ready": sum(1 for _, seen, _ in live if seen >= generation)}


class _Follower:
    """Polls the keeper; `_apply` loads what a new generation names (off the event loop)."""

    role = "replica"
    _keeper: Handle
    _generation: int

    def _apply(self, state: ServingState) -> None:
        raise NotImplementedError

    def _start_following(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        replica = serve.get_replica_context().replica_id.unique_id
        while True:
            try:
                state: ServingState = await self._keeper.current.remote()
                if state.generation != self._generation:
                    await asyncio.to_thread(self._apply, state)
                    self._generation = state.generation
                    logger.info("%s %s now serves generation %d", self.role, replica, state.generation)
                await self._keeper.acknowledge.remote(replica, self.role, self._generation)
            except Exception:
                logger.exception("%s %s could not follow the serving state; retrying", self.role, replica)
            await asyncio.sleep(POLL_S)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5})
class ModelDeployment(_Follower):
    """One served model on the replica's device; embed, classify, generate and caption calls are batched with
    `@serve.batch` (sizes from `user_config`: max_batch_size, batch_wait_timeout_s)."""

    role = "model"

    async def __init__(  # type: ignore[misc]
        self, name: str, keeper: Handle, device: str, max_image_pixels: int | None = None
    ) -> None:
        self._name, self._keeper, self._device = name, keeper, device
        self._max_image_pixels = max_image_pixels
        state: ServingState = await keeper.current.remote()
        self._current = await asyncio.to_thread(self._open, state.models[name].uri)
        self._services: dict[str, ModelService] = {self._current.version: self._current}
        self._lock = threading.Lock()
        self._generation = state.generation
        self._batches = {"batches": 0, "calls": 0, "largest": 0}
        self._batch_settings = BatchSettings(max_batch_size=32, batch_wait_timeout_s=0.005)
        self._start_following()

    def _open(self, uri: str) -> ModelService:
        return ModelService.open(uri, self._device, self._max_image_pixels)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        settings = BatchSettings.model_validate(user_config)
        self._batch_settings = settings
        for method in (self._embed_batch, self._classify_batch, self._generate_batch, self._caption_batch):
            batched: Any = method
            batched.set_max_batch_size(settings.max_batch_size)
            batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def _apply(self, state: ServingState) -> None:
        served = state.models.get(self._name)
        if served is None or served.version == self._current.version:
            return
        fresh = self._service(served.version, served.uri)
        with self._lock:
            self._services = {self._current.version: self._current, fresh.version: fresh}
            self._current = fresh

    def _service(self, version: str | None, uri: str | None) -> ModelService:
        """The loaded model of `version` (None: the current one), loading it from `uri` if needed."""
        current = self._current
        if version is None or version == current.version:
            return current
        with self._lock:
            if version in self._services:
                return self._services[version]
            if uri is None:
                raise RequestError(f"model version {version} is not loaded here", "model", 409)
            loaded = self._open(uri)
            if loaded.version != version:
                raise RequestError(f"{uri} now holds model version {loaded.version}, not {version}", "model", 409)
            self._services[version] = loaded
            return loaded

    def _run_grouped(self, calls: list[Any], answer: str) -> list[Any]:
        """Answer calls grouped by the model version they ask for, in their order."""
        stats = self._batches
        stats.update(batches=stats["batches"] + 1, calls=stats["calls"] + len(calls))
        stats["largest"] = max(stats["largest"], len(calls))
        results: list[Any] = [None] * len(calls)
        groups: dict[tuple[str | None, str | None], list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault((getattr(call, "version", None), getattr(call, "model_uri", None)), []).append(i)
        for (version, uri), members in groups.items():
            try:
                answers = getattr(self._service(version, uri), answer)([calls[i] for i in members])
            except RequestError as exc:
                answers = [exc] * len(members)
            for i, result in zip(members, answers, strict=True):
                results[i] = result
        return results

    async def embed(self, call: EmbedCall) -> EmbedResult | RequestError:
        result: EmbedResult | RequestError = await self._embed_batch(call)
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, calls: list[EmbedCall]) -> list[EmbedResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "embed_many")

    async def classify(self, call: ClassifyCall) -> ClassifyResult | RequestError:
        result: ClassifyResult | RequestError = await self._classify_batch(call)
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _classify_batch(self, calls: list[ClassifyCall]) -> list[ClassifyResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "classify_many")

    async def generate(self, call: GenerateCall) -> GenerateResult | RequestError:
        result: GenerateResult | RequestError = await self._generate_batch(call)
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _generate_batch(self, calls: list[GenerateCall]) -> list[GenerateResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "generate_many")

    async def caption(self, call: CaptionCall) -> CaptionResult | RequestError:
        result: CaptionResult | RequestError = await self._caption_batch(call)
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _caption_batch(self, calls: list[CaptionCall]) -> list[CaptionResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "caption_many")

    def info(self) -> dict[str, Any]:
        batching = {**self._batch_settings.model_dump(), **self._batches}
        return {**self._current.info(), "generation": self._generation, "batching": batching}


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class RetrieverDeployment(_Follower):
    """The index bundle; embeds each query through the model deployment of the index's version."""

    role = "retriever"

    async def __init__(  # type: ignore[misc]
        self, keeper: Handle, models: dict[str, Handle], thumbnail_size: int
    ) -> None:
        self._keeper, self._models, self._thumbnail_size = keeper, models, thumbnail_size
        state: ServingState = await keeper.current.remote()
        assert state.index is not None
        self._index: ServedIndex = state.index
        self._current = await asyncio.to_thread(self._open, state)
        self._generation = state.generation
        self._start_following()

    def _open(self, state: ServingState) -> tuple[RetrievalService, str, str]:
        assert state.index is not None
        service = RetrievalService.open(state.index.uri, self._thumbnail_size)
        return service, state.index.model, state.models[state.index.model].uri

    def _apply(self, state: ServingState) -> None:
        if state.index is not None and state.index != self._index:
            self._current = self._open(state)
            self._index = state.index

    async def search(self, call: SearchCall) -> SearchResult | RequestError:
        service, model_name, model_uri = self._current
        try:
            service.check(call)
        except RequestError as exc:
            return exc
        query = EmbedCall([call.text] if call.text is not None else [], [call.image] if call.image else [],
                          version=service.model_version, model_uri=model_uri)  # fmt: skip
        embedded = await self._models[model_name].embed.remote(query)
        if isinstance(embedded, RequestError):
            field = "image" if (embedded.field or "").startswith("images") else "text"
            return RequestError(embedded.message, field, embedded.status)
        try:
            return await asyncio.to_thread(service.search, call, embedded)
        except RequestError as exc:
            return exc

    def info(self) -> dict[str, Any]:
        return {**self._current[0].info(), "model": self._current[1], "generation": self._generation}


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Ingress:
    """The HTTP entry: FastAPI routes over handles to the keeper, the models and the retriever."""

    def __init__(
        self,
        config: dict[str, Any],
        key_hashes: list[str],
        keeper: Handle,
        models: dict[str, Handle],
        retriever: Handle | None,
    ) -> None:
        self._config = ServeAppConfig.model_validate(config)
        self._keys = KeyChecker(key_hashes)
        if not self._keys.enabled:
            logger.warning("no API keys are set: every /v1 route is open to anyone who can reach this app")
        self._backend = ServeBackend(keeper, models, retriever, self._config.reload_timeout_s)

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self._backend, self._config, self._keys)
