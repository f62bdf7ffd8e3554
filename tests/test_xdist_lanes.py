"""Under `make test` (pytest-xdist workers), each lane of the tests that use Ray (tests/conftest.py) runs on one
worker, the lane of the tests with a Ray of their own first on its worker: a session here with stand-in tests
(no Ray) in each lane, run by two workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO_ROOT, TRAINING_LANE_FILES

CONFTEST = """
import pytest

from tests.conftest import pytest_collection_modifyitems


@pytest.fixture
def ray_session():
    \"\"\"A stand-in: the name puts a test in the session's lane.\"\"\"
"""

STAND_IN = """
import os, time
from pathlib import Path

import pytest

pytestmark = [{marks}]


@pytest.mark.parametrize("n", range({count}))
def test_stand_in(n, {fixtures}):
    time.sleep(0.05)
    with Path(os.environ["LANES_LOG"]).open("a") as log:
        log.write(f"{{Path(__file__).name}} {{os.environ['PYTEST_XDIST_WORKER']}}\\n")
"""


def test_each_lane_runs_on_one_worker_and_the_own_ray_lane_first_on_its_worker(tmp_path: Path) -> None:
    training = sorted(TRAINING_LANE_FILES)[0]
    modules = {  # by size the session's lane would come first and the own-Ray lane last
        "test_a_free.py": STAND_IN.format(marks="", count=6, fixtures=""),
        "test_b_session.py": STAND_IN.format(marks="", count=12, fixtures="ray_session"),
        "test_c_own.py": STAND_IN.format(marks="pytest.mark.own_ray", count=3, fixtures=""),
        training: STAND_IN.format(marks="", count=8, fixtures=""),
        "test_z_free.py": STAND_IN.format(marks="", count=6, fixtures=""),
    }
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    for name, text in modules.items():
        (suite / name).write_text(text)
    log = tmp_path / "lanes.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LANES_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
               "-p", "tests.support.xdist_lanes", "-o", "addopts=", str(suite)]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers: dict[str, set[str]] = defaultdict(set)
    first_on: dict[str, str] = {}
    lines = log.read_text().splitlines()
    for line in lines:
        module, worker = line.split()
        workers[module].add(worker)
        first_on.setdefault(worker, module)
    assert len(lines) == 35
    for lane in ("test_b_session.py", "test_c_own.py", training):
        assert len(workers[lane]) == 1, f"the tests of {lane} ran on {sorted(workers[lane])}"
    (own_worker,) = workers["test_c_own.py"]
    assert first_on[own_worker] == "test_c_own.py", "the own-Ray lane runs before its worker's session Ray starts"
    assert workers["test_a_free.py"] | workers["test_z_free.py"] == {"gw0", "gw1"}, "tests of no lane use both"
