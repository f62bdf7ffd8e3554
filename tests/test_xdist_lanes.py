"""Under `make test` (pytest-xdist workers), each lane of the tests that use Ray (tests/conftest.py) runs on one
worker, the tests with a Ray of their own first on theirs: sessions here with stand-in tests (no Ray) in each
lane."""

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


def _run_stand_ins(tmp_path: Path, workers: int) -> list[tuple[str, str]]:
    """(module, worker) of each stand-in test in the order they ran."""
    modules = {  # by size the session's lane would come first
        "test_a_free.py": STAND_IN.format(marks="", count=6, fixtures=""),
        "test_b_session.py": STAND_IN.format(marks="", count=12, fixtures="ray_session"),
        "test_c_own.py": STAND_IN.format(marks="pytest.mark.own_ray", count=3, fixtures=""),
        sorted(TRAINING_LANE_FILES)[0]: STAND_IN.format(marks="", count=4, fixtures=""),
        "test_z_free.py": STAND_IN.format(marks="", count=6, fixtures=""),
    }
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    for name, text in modules.items():
        (suite / name).write_text(text)
    log = tmp_path / "lanes.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LANES_LOG": str(log)}
    command = [sys.executable, "-m", "pytest", "-q", "-n", str(workers), "--dist", "loadgroup", "-p",
               "no:cacheprovider", "-p", "tests.support.xdist_lanes", "-o", "addopts=", str(suite)]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = [(module, worker) for module, worker in map(str.split, log.read_text().splitlines())]
    assert len(ran) == 31
    return ran


def test_each_lane_runs_on_one_worker_its_own_ray_tests_first(tmp_path: Path) -> None:
    ran = _run_stand_ins(tmp_path, workers=2)
    workers: dict[str, set[str]] = defaultdict(set)
    for module, worker in ran:
        workers[module].add(worker)
    training = sorted(TRAINING_LANE_FILES)[0]
    assert workers["test_c_own.py"] == workers[training] and len(workers[training]) == 1, dict(workers)
    assert len(workers["test_b_session.py"]) == 1 and workers["test_b_session.py"] != workers[training]
    (own_worker,) = workers["test_c_own.py"]
    assert [module for module, worker in ran if worker == own_worker][:3] == ["test_c_own.py"] * 3
    assert workers["test_a_free.py"] | workers["test_z_free.py"] == {"gw0", "gw1"}, "tests of no lane use both"


def test_the_lane_of_the_own_ray_tests_is_handed_out_first(tmp_path: Path) -> None:
    """With one worker too, whose session Ray a lane run before would have started."""
    assert [module for module, _ in _run_stand_ins(tmp_path, workers=1)][:3] == ["test_c_own.py"] * 3
