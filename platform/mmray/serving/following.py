"""How the replicas of an app agree on what they serve: `StateKeeper` (one replica) is the `Coordinator`
(the committed bundles, the staged ones during a reload, every following replica's reports); each model
and retriever replica is a `Follower` of the keeper's plan, loading in the background and swapping on
commit."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from mmray.serving.calls import RequestError
from mmray.serving.coordination import Coordinator, ReloadBusyError
from mmray.serving.state import ServingState

logger = logging.getLogger("ray.serve")
LOAD_WAIT_S = 300.0
"""How long a request to a replica still loading its first bundles waits for them (a replica replacing a dead
one, or one just scaled up), before it is answered 503."""
Handle = DeploymentHandle[Any]
POLL_S = 0.5


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=10_000,
    ray_actor_options={"num_cpus": 0},
    logging_config={"enable_access_log": False},
)
class StateKeeper(Coordinator):
    """The app's `Coordinator`: the served bundles and each following replica's reports."""

    def current(self) -> ServingState:
        return self.state

    def stage(self, state: ServingState) -> int | RequestError:  # type: ignore[override]
        """A reload asked for while another is staged is answered as a 409."""
        try:
            return super().stage(state)
        except ReloadBusyError as exc:
            return RequestError(str(exc), None, 409)


class Follower:
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
