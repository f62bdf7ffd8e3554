"""Thin Ray Serve deployments over the serving classes.

- `StateKeeper` (one replica) holds the `Coordinator`: the committed bundles, the staged ones during a
  reload, and every following replica's reports.
- `ModelDeployment` (one per served model) and `RetrieverDeployment` follow the keeper. Their bundles load
  in the background, so a replica is up (and the app answers /healthz) at once and reports ready when
  loaded. A staged reload loads beside what they serve and answers a probe before it is committed; on
  commit they swap, so requests already running finish on the bundle they started with. A model replica
  keeps the previous version, and a search asks for the version its index carries, so a search never
  mixes two models' spaces.
- `Ingress` is the FastAPI app (see `api.py`) over handles to the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from mmray.config.serving import BatchSettings, RequestLimits, ServeAppConfig
from mmray.serving.access_log import Recorder
from mmray.serving.api import build_api
from mmray.serving.auth import Access
from mmray.serving.backend import ServeBackend, surviving_replica_loss
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
from mmray.serving.coordination import Coordinator, ReloadBusyError
from mmray.serving.model_service import ModelService
from mmray.serving.retrieval_service import RetrievalService
from mmray.serving.state import ServingState

logger = logging.getLogger("ray.serve")
Handle = DeploymentHandle[Any]
POLL_S = 0.5
LOAD_WAIT_S = 300.0
"""How long a request to a replica still loading its first bundles waits for them (a replica replacing a dead
one, or one just scaled up), before it is answered 503."""


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=10_000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class StateKeeper:
    """The served bundles and each following replica's reports (a `Coordinator`)."""

    def __init__(self, state: ServingState) -> None:
        self.coordinator = Coordinator(state)

    def current(self) -> ServingState:
        return self.coordinator.state

    def plan(self) -> tuple[ServingState, ServingState | None]:
        return self.coordinator.plan()

    def stage(self, state: ServingState) -> int | RequestError:
        try:
            return self.coordinator.stage(state)
        except ReloadBusyError as exc:
            return RequestError(str(exc), None, 409)

    def commit(self, generation: int) -> ServingState:
        return self.coordinator.commit(generation)

    def abort(self, generation: int) -> None:
        self.coordinator.abort(generation)

    def report(
        self, replica: str, role: str, serving: int, staged: int | None, failed: int | None, error: str | None
    ) -> None:
        self.coordinator.report(replica, role, serving, staged, failed, error)

    def progress(self, generation: int) -> dict[str, Any]:
        return self.coordinator.progress(generation).as_dict()

    def readiness(self) -> dict[str, Any]:
        return self.coordinator.readiness()


class _Follower:
    """Follows the keeper's plan: loads (in a thread, one load at a time) what it serves and what is staged,
    swaps on commit, and reports every `POLL_S`, loads in progress included."""

    role = "replica"
    _keeper: Handle

    def _init_following(self) -> None:
        self._serving = -1
        self._loaded = threading.Event()  # set once the first bundles serve
        self._staged: tuple[int, Any] | None = None  # (generation, what `_load` returned)
        self._failed: tuple[int, str] | None = None
        self._loading: asyncio.Task[None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._follow())

    def _load(self, state: ServingState) -> Any:
        """Load (and probe) what `state` names for this replica; raise with the cause when it cannot."""
        raise NotImplementedError

    def _swap(self, state: ServingState, loaded: Any) -> None:
        raise NotImplementedError

    def _bundle(self, state: ServingState) -> str:
        """The bundle this replica loads for `state` (named in failures)."""
        raise NotImplementedError

    async def _load_then(self, state: ServingState, commit: bool) -> None:
        try:
            loaded = await asyncio.to_thread(self._load, state)
        except Exception as exc:
            self._failed = (state.generation, f"{self._bundle(state)}: {type(exc).__name__}: {exc}")
            logger.exception("%s could not load generation %d", self.role, state.generation)
            return
        if commit:
            self._swap(state, loaded)
            self._serving = state.generation
            self._loaded.set()
        else:
            self._staged = (state.generation, loaded)

    def _step(self, committed: ServingState, staged: ServingState | None) -> None:
        """Start what the plan needs, unless a load is running."""
        if self._loading is not None and not self._loading.done():
            return
        if committed.generation != self._serving:
            if self._staged is not None and self._staged[0] == committed.generation:
                self._swap(committed, self._staged[1])
                self._serving, self._staged = committed.generation, None
                logger.info("%s now serves generation %d", self.role, committed.generation)
            elif self._failed is None or self._failed[0] != committed.generation:
                self._loading = asyncio.get_running_loop().create_task(self._load_then(committed, commit=True))
        elif staged is None:
            self._staged = None
        elif (self._staged is None or self._staged[0] != staged.generation) and (
            self._failed is None or self._failed[0] != staged.generation
        ):
            self._loading = asyncio.get_running_loop().create_task(self._load_then(staged, commit=False))

    async def _follow(self) -> None:
        replica = serve.get_replica_context().replica_id.unique_id
        while True:
            try:
                committed, staged = await self._keeper.plan.remote()
                self._step(committed, staged)
                failed, error = self._failed if self._failed is not None else (None, None)
                staged_generation = self._staged[0] if self._staged is not None else None
                await self._keeper.report.remote(replica, self.role, self._serving, staged_generation, failed, error)
            except Exception:
                logger.exception("%s %s could not follow the serving state; retrying", self.role, replica)
            await asyncio.sleep(POLL_S)


@serve.deployment(
    max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5}, logging_config={"enable_access_log": False}
)
class ModelDeployment(_Follower):
    """One served model on the replica's device; embed, classify, generate and caption calls are batched with
    `@serve.batch` (sizes from `user_config`: max_batch_size, batch_wait_timeout_s)."""

    role = "model"

    async def __init__(  # type: ignore[misc]
        self, name: str, keeper: Handle, device: str, limits: dict[str, Any]
    ) -> None:
        # async: Serve awaits the constructor on the replica's event loop, where following starts
        self._name, self._keeper, self._device = name, keeper, device
        self._limits = RequestLimits.model_validate(limits)
        self._current: ModelService | None = None
        self._services: dict[str, ModelService] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._batches = {"batches": 0, "calls": 0, "largest": 0}
        self._batch_settings = BatchSettings(max_batch_size=32, batch_wait_timeout_s=0.005)
        self._init_following()

    def _load(self, state: ServingState) -> ModelService:
        served = state.models[self._name]
        if served.version in self._services:
            return self._services[served.version]
        loaded = self._open(served.uri)
        if loaded.version != served.version:
            raise RuntimeError(f"{served.uri} holds model version {loaded.version}, not {served.version}")
        loaded.probe()
        return loaded

    def _bundle(self, state: ServingState) -> str:
        return state.models[self._name].uri

    def _swap(self, state: ServingState, loaded: Any) -> None:
        with self._lock:
            previous = self._current
            self._services = {loaded.version: loaded, **({previous.version: previous} if previous else {})}
            self._current = loaded

    def _open(self, uri: str) -> ModelService:
        limits = self._limits
        return ModelService.open(uri, self._device, limits.max_image_pixels, limits.max_caption_work)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        settings = BatchSettings.model_validate(user_config)
        self._batch_settings = settings
        for method in (self._embed_batch, self._classify_batch, self._generate_batch, self._caption_batch):
            batched: Any = method
            batched.set_max_batch_size(settings.max_batch_size)
            batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def _service(self, version: str | None, uri: str | None) -> ModelService:
        """The loaded model of `version` (None: the current one), loading it from `uri` if needed."""
        current = self._current
        if current is None and self._loaded.wait(LOAD_WAIT_S):
            current = self._current
        if current is None:
            raise RequestError(f"model {self._name!r} is still loading; retry in a moment", "model", 503)
        if version is None or version == current.version:
            return current
        found = self._loaded_version(version)
        if found is not None:
            return found
        if uri is None:
            raise RequestError(f"model version {version} is not loaded here", "model", 409)
        with self._opening:  # one load on demand at a time, outside the lock swaps take
            found = self._loaded_version(version)
            if found is not None:
                return found
            loaded = self._open(uri)
            if loaded.version != version:
                raise RequestError(f"{uri} now holds model version {loaded.version}, not {version}", "model", 409)
            with self._lock:
                self._services[version] = loaded
            return loaded

    def _loaded_version(self, version: str) -> ModelService | None:
        """`version` if this replica holds it: served, kept from before, or staged by a reload (a search may
        ask for a committed version before this replica has swapped)."""
        staged = self._staged
        if staged is not None and staged[1].version == version:
            return staged[1]  # type: ignore[no-any-return]
        with self._lock:
            return self._services.get(version)

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
        loaded = self._current.info() if self._current is not None else {"loading": True}
        return {**loaded, "generation": self._serving, "batching": batching}


@serve.deployment(
    max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25}, logging_config={"enable_access_log": False}
)
class RetrieverDeployment(_Follower):
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
        except RequestError as exc:
            return exc
        query = EmbedCall([call.text] if call.text is not None else [], [call.image] if call.image else [],
                          version=service.model_version, model_uri=model_uri)  # fmt: skip
        model = self._models[model_name]
        embedded = await surviving_replica_loss(lambda: model.embed.remote(query))
        if isinstance(embedded, RequestError):
            field = "image" if (embedded.field or "").startswith("images") else "text"
            return RequestError(embedded.message, field, embedded.status)
        try:
            return await asyncio.to_thread(service.search, call, embedded)
        except RequestError as exc:
            return exc

    def info(self) -> dict[str, Any]:
        if self._current is None:
            return {"loading": True, "generation": self._serving}
        return {**self._current[0].info(), "model": self._current[1], "generation": self._serving}


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
        self._config = ServeAppConfig.model_validate(config)
        self._access = Access(key_hashes, admin_key_hashes)
        self._roots = roots
        if not self._access.enabled:
            logger.warning("no query keys are set: every /v1 query route is open to anyone who can reach this app")
        self._backend = ServeBackend(keeper, models, retriever, self._config.reload_timeout_s)

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self._backend, self._config, self._access, self._roots, request_metrics())
