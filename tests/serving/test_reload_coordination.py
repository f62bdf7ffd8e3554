"""The two-phase reload, as plain Python: staged, loaded and probed by every live replica, then committed;
a failure or silence aborts it and the app keeps what it served; readiness follows the replicas."""

from __future__ import annotations

import pytest

from mmray.serving import coordination
from mmray.serving.coordination import Coordinator, ReloadBusyError
from mmray.serving.state import ServedModel, ServingState


def _state(version: str) -> ServingState:
    return ServingState({"clip": ServedModel(f"/runs/{version}", version, "dual_encoder", ("embed",))})


def test_a_stage_commits_only_once_every_live_replica_holds_it() -> None:
    keeper = Coordinator(_state("a"))
    keeper.report("m1", "model", 0, None, None, None)
    keeper.report("r1", "retriever", -1, None, None, None)
    assert keeper.readiness()["ready"] is False and keeper.readiness()["loading"] == ["retriever r1"]
    keeper.report("r1", "retriever", 0, None, None, None)
    assert keeper.readiness()["ready"] is True

    generation = keeper.stage(_state("b"))
    assert generation == 1 and keeper.plan()[1] is not None and keeper.state.models["clip"].version == "a"
    with pytest.raises(ReloadBusyError, match="generation 1 is being loaded"):
        keeper.stage(_state("c"))
    keeper.report("m1", "model", 0, 1, None, None)
    assert keeper.progress(1) == {"replicas": 2, "staged": 1, "serving": 0, "failed": []}
    keeper.report("r1", "retriever", 0, 1, None, None)
    assert keeper.progress(1)["staged"] == 2
    committed = keeper.commit(1)
    assert committed.generation == 1 and committed.models["clip"].version == "b" and keeper.plan()[1] is None
    assert keeper.readiness()["ready"] is False, "replicas have not swapped yet"
    keeper.report("m1", "model", 1, None, None, None)
    keeper.report("r1", "retriever", 1, None, None, None)
    assert keeper.progress(1)["serving"] == 2 and keeper.readiness()["ready"] is True


def test_a_failed_stage_is_reported_aborted_and_never_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    keeper = Coordinator(_state("a"))
    keeper.report("m1", "model", 0, None, None, None)
    first = keeper.stage(_state("broken"))
    keeper.report("m1", "model", 0, None, first, "WeightsError: bad weights")
    assert keeper.progress(first)["failed"] == ["model m1: WeightsError: bad weights"]
    keeper.abort(first)
    assert keeper.plan() == (keeper.state, None) and keeper.state.models["clip"].version == "a"
    second = keeper.stage(_state("b"))
    assert second == first + 1, "a new stage gets a new number, so the old failure does not count against it"
    assert keeper.progress(second)["failed"] == []

    monkeypatch.setattr(coordination, "LIVE_S", 0.0)
    assert keeper.progress(second)["replicas"] == 0, "a replica silent for LIVE_S is no longer counted"
