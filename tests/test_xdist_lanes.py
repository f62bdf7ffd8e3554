"""Under `make test TEST_WORKERS=N`, each lane of the tests that use Ray (tests/conftest.py) runs on one
xdist worker: a session here with stand-in tests (no Ray) in a lane's module, run by two workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO_ROOT, TRAINING_LANE_FILES

STAND_IN = """
import os, time
from pathlib import Path

import pytest

@pytest.mark.parametrize("n", range(8))
def test_stand_in(n):
    time.sleep(0.05)
    with Path(os.environ["LANES_LOG"]).open("a") as log:
        log.write(f"{Path(__file__).name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_each_lane_runs_on_one_worker(tmp_path: Path) -> None:
    lane_module = sorted(TRAINING_LANE_FILES)[0]
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems\n")
    for name in (lane_module, "test_free_a.py", "test_free_b.py"):
        (tests / name).write_text(STAND_IN)
    log = tmp_path / "lanes.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LANES_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
               "-p", "tests.support.xdist_lanes", "-o", "addopts=", str(tests)]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers: dict[str, set[str]] = defaultdict(set)
    for line in log.read_text().splitlines():
        module, worker = line.split()
        workers[module].add(worker)
    assert sum(1 for _ in log.read_text().splitlines()) == 24
    assert len(workers[lane_module]) == 1, f"the lane's tests ran on {sorted(workers[lane_module])}"
    assert workers["test_free_a.py"] | workers["test_free_b.py"] == {"gw0", "gw1"}, "tests of no lane use both"
