"""Which bundles an app serves, and reloads in two phases, as plain Python (the keeper deployment holds one).

A reload is staged: every replica loads the staged bundles beside the ones it serves and answers a probe
request, reporting success or the cause of its failure. Only when every live replica holds them is the
stage committed (replicas swap in a moment); any failure or a timeout aborts it, and the app keeps serving
what it served. Replicas report every `POLL_S` while they load too, so a slow load never drops a replica
from the count; one silent for `LIVE_S` has died."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from mmray.serving.state import ServingState

LIVE_S = 5.0


@dataclass
class ReplicaReport:
    """What a following replica last said: the committed generation it serves (-1 while its first load runs),
    the staged generation it holds ready, the generation its last failed load was for, and why."""

    role: str
    serving: int
    staged: int | None
    failed: int | None
    error: str | None
    seen: float


class ReloadBusyError(RuntimeError):
    """A reload was asked for while another is staged."""


class Coordinator:
    """The committed state, the staged one (during a reload) and every replica's last report."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.staged: ServingState | None = None
        self.reports: dict[str, ReplicaReport] = {}
        self._next = state.generation + 1  # every stage a new number, an aborted one's never reused

    def plan(self) -> tuple[ServingState, ServingState | None]:
        """What followers serve, and what they should load beside it."""
        return self.state, self.staged

    def stage(self, state: ServingState) -> int:
        if self.staged is not None:
            raise ReloadBusyError(f"generation {self.staged.generation} is being loaded; retry when it is done")
        self.staged = replace(state, generation=self._next)
        self._next += 1
        return self.staged.generation

    def commit(self, generation: int) -> ServingState:
        if self.staged is None or self.staged.generation != generation:
            raise ReloadBusyError(f"generation {generation} is not staged")
        self.state, self.staged = self.staged, None
        return self.state

    def abort(self, generation: int) -> None:
        if self.staged is not None and self.staged.generation == generation:
            self.staged = None

    def report(
        self, replica: str, role: str, serving: int, staged: int | None, failed: int | None, error: str | None
    ) -> None:
        self.reports[replica] = ReplicaReport(role, serving, staged, failed, error, time.monotonic())

    def live(self) -> dict[str, ReplicaReport]:
        now = time.monotonic()
        return {name: report for name, report in self.reports.items() if now - report.seen < LIVE_S}

    def progress(self, generation: int) -> dict[str, Any]:
        """Live replicas and, for `generation`, how many hold it staged, serve it, or failed to load it."""
        live = self.live()
        return {
            "replicas": len(live),
            "staged": sum(1 for r in live.values() if r.staged == generation or r.serving >= generation),
            "serving": sum(1 for r in live.values() if r.serving >= generation),
            "failed": [f"{r.role} {name}: {r.error}" for name, r in live.items() if r.failed == generation],
        }

    def readiness(self) -> dict[str, object]:
        """Ready: some replica reports, and every live one serves the committed generation."""
        live = self.live()
        generation = self.state.generation
        behind = sorted(f"{r.role} {name}" for name, r in live.items() if r.serving < generation)
        failed = sorted(f"{r.role} {name}: {r.error}" for name, r in live.items() if r.failed == generation)
        return {"ready": bool(live) and not behind, "generation": generation, "loading": behind, "failed": failed,
                "replicas": len(live), "reloading": self.staged is not None}  # fmt: skip
