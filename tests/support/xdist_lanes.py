"""Lanes under pytest-xdist (`--dist loadgroup`): all tests of a lane run on one worker, in collection order.

xdist 3.8's own loadgroup scheduling reads a lane from an `@lane` suffix it appends to `item._nodeid`, which
pytest 9 no longer reads (a node's id is built from `item._id`), so it would group nothing. Instead each
worker writes the lanes it collected to a file, and the controller's scheduler takes a test's lane as its
scope, handing the lanes out first (`LANE_ORDER`); a test of no lane is a scope of its own, so those tests go
to whichever worker is free.

PYTEST_DONT_REWRITE: tests/conftest.py imports this plugin before registering it, and it has no asserts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

LANES_DIR_KEY = "mmray_lanes_dir"
LANES_DIR = pytest.StashKey[Path]()
"""The controller's folder of the workers' lane files."""
OWN_RAY_AND_TRAINING, SESSION = "ray-own-and-training", "ray-session"
LANE_ORDER = (OWN_RAY_AND_TRAINING, SESSION)
"""The order lanes are handed out in, before the tests of no lane: the lane with the tests that start a Ray of
their own (sorted first within it) first of all, so its worker has not started the session's Ray when they
run, whatever the number of workers."""


class LaneScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with each test's lane as its scope."""

    def __init__(self, config: pytest.Config, log: Any, lanes_dir: Path) -> None:
        super().__init__(config, log)
        self.lanes_dir = lanes_dir
        self._lanes: dict[str, str] | None = None
        self._ordered = False

    def _assign_work_unit(self, node: Any) -> None:
        if not self._ordered:  # the queue is complete at the first assignment; sorted stably, by lane
            ranked = sorted(self.workqueue.items(), key=lambda unit: _rank(unit[0]))
            self.workqueue.clear()
            self.workqueue.update(ranked)
            self._ordered = True
        super()._assign_work_unit(node)

    def _split_scope(self, nodeid: str) -> str:
        if self._lanes is None:  # asked once every worker has collected, so their files are written
            written = sorted(self.lanes_dir.glob("lanes-*.json"))
            self._lanes = json.loads(written[0].read_text()) if written else {}
        return self._lanes.get(nodeid, nodeid)


def _rank(scope: str) -> int:
    return LANE_ORDER.index(scope) if scope in LANE_ORDER else len(LANE_ORDER)


def record_lanes(config: pytest.Config, lanes: dict[str, str]) -> None:
    """In an xdist worker, the lane of each collected test (by node id) for the controller's scheduler."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if not workerinput or LANES_DIR_KEY not in workerinput:
        return
    target = Path(workerinput[LANES_DIR_KEY]) / f"lanes-{workerinput['workerid']}.json"
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(lanes))
    os.replace(partial, target)


def _lanes_dir(config: pytest.Config) -> Path:
    if LANES_DIR not in config.stash:
        config.stash[LANES_DIR] = Path(tempfile.mkdtemp(prefix="mmray-lanes-"))
    return config.stash[LANES_DIR]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[LANES_DIR_KEY] = str(_lanes_dir(node.config))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LaneScheduling | None:
    if config.getvalue("dist") != "loadgroup":
        return None
    return LaneScheduling(config, log, _lanes_dir(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    if LANES_DIR in config.stash:
        shutil.rmtree(config.stash[LANES_DIR], ignore_errors=True)
