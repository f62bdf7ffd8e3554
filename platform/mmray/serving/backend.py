"""The API's backend on Ray Serve: deployment handles, a short-lived cache of the serving state,
and reloads that wait until every replica has loaded the new bundles."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray.serve.handle import DeploymentHandle

from mmray.errors import IndexBundleError, MmrayError
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
from mmray.serving.state import ServingState, resolve_state

STATE_TTL_S = 1.0
Handle = DeploymentHandle[Any]


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

    async def embed(self, model: str, call: EmbedCall) -> EmbedResult | RequestError:
        result: EmbedResult | RequestError = await self.models[model].embed.remote(call)
        return result

    async def classify(self, model: str, call: ClassifyCall) -> ClassifyResult | RequestError:
        result: ClassifyResult | RequestError = await self.models[model].classify.remote(call)
        return result

    async def generate(self, model: str, call: GenerateCall) -> GenerateResult | RequestError:
        result: GenerateResult | RequestError = await self.models[model].generate.remote(call)
        return result

    async def caption(self, model: str, call: CaptionCall) -> CaptionResult | RequestError:
        result: CaptionResult | RequestError = await self.models[model].caption.remote(call)
        return result

    async def search(self, call: SearchCall) -> SearchResult | RequestError:
        if self.retriever is None:
            return RequestError("this app serves no index; start it with `index:` to search", None, 404)
        result: SearchResult | RequestError = await self.retriever.search.remote(call)
        return result

    async def describe(self) -> dict[str, Any]:
        state = await self.keeper.current.remote()
        names = list(self.models)
        infos = await asyncio.gather(*(self.models[name].info.remote() for name in names))
        index = await self.retriever.info.remote() if self.retriever is not None else None
        return {"generation": state.generation, "models": dict(zip(names, infos, strict=True)), "index": index}

    async def reload(self, models: dict[str, str], index: str | None) -> dict[str, Any]:
        """Check the new pair from its manifests (refusing versions that differ), publish it, and wait
        until every live replica serves it."""
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
        applied: ServingState = await self.keeper.replace.remote(fresh)
        self._state = None
        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            progress = await self.keeper.progress.remote(applied.generation)
            if progress["ready"] >= progress["replicas"]:
                break
            if time.monotonic() > deadline:
                raise RequestError(
                    f"generation {applied.generation} is published but only {progress['ready']} of "
                    f"{progress['replicas']} replicas loaded it within {self.reload_timeout_s:.0f} s; "
                    "see the replica logs",
                    None,
                    504,
                )
            await asyncio.sleep(0.2)
        return {"generation": applied.generation, **applied.as_dict(), "replicas": progress}
