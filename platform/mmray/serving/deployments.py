"""The model deployment and, in `retriever_deployment.py`, the index's: each a `Follower` of the app's
`StateKeeper` (`following.py`).

Their bundles load in the background, so a replica is up (and the app answers /healthz) at once and reports
ready when loaded. On a reload's commit they swap, so requests already running finish on the bundle they
started with; a model replica keeps the previous version, and a search asks for the version its index
carries, so a search never mixes two models' spaces."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from mmray.config.serving import BatchSettings, RequestLimits
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
)
from mmray.serving.following import LOAD_WAIT_S, Follower, Handle
from mmray.serving.model_service import ModelService
from mmray.serving.state import ServingState

logger = logging.getLogger("ray.serve")


@serve.deployment(
    max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5}, logging_config={"enable_access_log": False}
)
class ModelDeployment(Follower):
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
        loaded = self._open(served.uri, served.version)
        loaded.probe()
        return loaded

    def _bundle(self, state: ServingState) -> str:
        return state.models[self._name].uri

    def _swap(self, state: ServingState, loaded: Any) -> None:
        with self._lock:
            previous = self._current
            self._services = {loaded.version: loaded, **({previous.version: previous} if previous else {})}
            self._current = loaded

    def _open(self, uri: str, version: str) -> ModelService:
        """The model bundle at `uri`, which must still hold model `version`."""
        loaded = ModelService.open(uri, self._device, self._limits.max_image_pixels, self._limits.max_caption_work)
        if loaded.version != version:
            raise RequestError(f"{uri} now holds model version {loaded.version}, not {version}", "model", 409)
        return loaded

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._batch_settings = settings = BatchSettings.model_validate(user_config)
        for method in (self.embed, self.classify, self.generate, self.caption):
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
            loaded = self._open(uri, version)
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

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, calls: list[EmbedCall]) -> list[EmbedResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "embed_many")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify(self, calls: list[ClassifyCall]) -> list[ClassifyResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "classify_many")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def generate(self, calls: list[GenerateCall]) -> list[GenerateResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "generate_many")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def caption(self, calls: list[CaptionCall]) -> list[CaptionResult | RequestError]:
        return await asyncio.to_thread(self._run_grouped, calls, "caption_many")

    def info(self) -> dict[str, Any]:
        batching = {**self._batch_settings.model_dump(), **self._batches}
        loaded = self._current.info() if self._current is not None else {"loading": True}
        return {**loaded, "generation": self._serving, "batching": batching}
