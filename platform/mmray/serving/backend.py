"""The API's backend on Ray Serve: deployment handles, a short-lived cache of the serving state,
and reloads that wait until every replica has loaded the new bundles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from mmray.errors import IndexBundleError, MmrayError
from mmray.serving.calls import RequestError
from mmray.serving.state import ServingState, resolve_state

STATE_TTL_S = 1.0
REPLICA_LOSS_TRIES = 3
Handle = DeploymentHandle[Any]
T = TypeVar("T")


async def surviving_replica_loss(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again (up to `REPLICA_LOSS_TRIES` times) when the replica answering it died mid-request: Serve
    routes the retry to a live replica. Every call retried this way only reads (embed, classify, search, …)."""
    for attempt in range(REPLICA_LOSS_TRIES):
        try:
            return await call()
        except RayActorError:
            if attempt + 1 == REPLICA_LOSS_TRIES:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class ServeBackend:
    def __init__(
        self,
        keeper: Handle,
        models: dict[str, Handle],
        retriever: Handle | None,
        reload_timeout_s: float,
    ) -> None:
        self.keeper, self.models, self.retriever = keeper, models, retriever
        self.reload_timeout_s = reload_timeout_s
        self._state: ServingState | None = None
        self._state_at = 0.0

    async def state(self) -> ServingState:
        if self._state is None or time.monotonic() - self._state_at > STATE_TTL_S:
            self._state = await self.keeper.current.remote()
            self._state_at = time.monotonic()
        return self._state

    async def call(self, method: str, call: Any, model: str | None = None) -> Any:
        """`method` of the named model's deployment (the retriever's without one); raises a replica's RequestError."""
        handle = self.models[model] if model is not None else self.retriever
        if handle is None:
            raise RequestError("this app serves no index; start it with `index:` to search", None, 404)
        result = await surviving_replica_loss(lambda: getattr(handle, method).remote(call))
        if isinstance(result, RequestError):
            raise result
        return result

    async def describe(self) -> dict[str, Any]:
        state = await self.keeper.current.remote()
        names = list(self.models)
        infos = await asyncio.gather(*(self.models[name].info.remote() for name in names))
        index = await self.retriever.info.remote() if self.retriever is not None else None
        return {"generation": state.generation, "models": dict(zip(names, infos, strict=True)), "index": index}

    async def readiness(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.keeper.readiness.remote()
        return result

    async def reload(self, models: dict[str, str], index: str | None) -> dict[str, Any]:
        """Check the new pair from its manifests (refusing versions that differ), stage it, and commit it once
        every live replica has loaded and probed it; a failure or a timeout aborts the stage (`coordination.py`)."""
        current: ServingState = await self.keeper.current.remote()
        unknown = sorted(set(models) - set(current.models))
        if unknown:
            raise RequestError(f"no served model is named {unknown[0]!r}; served: {', '.join(current.models)}",
                               f"models.{unknown[0]}")  # fmt: skip
        if index is not None and self.retriever is None:
            raise RequestError("this app was started without an index; restart it with one", "index", 409)
        wanted = {name: models.get(name, served.uri) for name, served in current.models.items()}
        index_uri = index if index is not None else (current.index.uri if current.index else None)
        try:
            fresh = await asyncio.to_thread(resolve_state, wanted, index_uri)
        except IndexBundleError as exc:
            raise RequestError(str(exc), "index", 409) from None
        except MmrayError as exc:
            raise RequestError(str(exc), "models", 404) from None
        generation = await self.keeper.stage.remote(fresh)
        if isinstance(generation, RequestError):
            raise generation
        try:
            await self._wait_for(generation, "staged", current.generation)
        except BaseException:
            await self.keeper.abort.remote(generation)
            raise
        applied: ServingState = await self.keeper.commit.remote(generation)
        self._state = None
        progress = await self._wait_for(generation, "serving", current.generation)
        return {"generation": applied.generation, **asdict(applied), "replicas": progress}

    async def _wait_for(self, generation: int, phase: str, served: int) -> dict[str, Any]:
        """Until every live replica has `phase` (staged: loaded and probed; serving: swapped) `generation`."""
        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            progress: dict[str, Any] = await self.keeper.progress.remote(generation)
            if phase == "staged" and progress["failed"]:
                causes = "; ".join(progress["failed"])
                raise RequestError(f"the new bundles failed to load, so nothing changed (the app still serves "
                                   f"generation {served}): {causes}", None, 422)  # fmt: skip
            if progress["replicas"] and progress[phase] >= progress["replicas"]:
                return progress
            if time.monotonic() > deadline:
                undone = f"nothing changed (the app still serves generation {served})"
                if phase == "serving":
                    undone = f"generation {generation} is committed; the other replicas follow as they catch up"
                raise RequestError(f"only {progress[phase]} of {progress['replicas']} replicas had {phase} "
                                   f"generation {generation} within {self.reload_timeout_s:.0f} s; {undone}; see "
                                   "the replica logs", None, 504)  # fmt: skip
            await asyncio.sleep(0.2)
