"""Shared fixtures: repository paths, the session's Ray, the SeaweedFS S3 server, small generated datasets.

One Ray serves the session: a head started by `ray start` (its own temp directory, stopped by its process
group) on first use, which `mmray` subprocesses reach through RAY_ADDRESS (tests using the `ray_cluster`
fixture, and every test once it runs) and in-process tests join (`ray_session`). Tests marked `own_ray`
(or using `no_in_process_ray`) exercise what a command does with a Ray of its own (the embedded start,
signals, resource checks, a second cluster): they run first, before the session's Ray starts.

`make test` runs pytest-xdist workers (`--dist loadgroup`), each with its own session Ray and S3 server.
Tests that use Ray are split into two lanes (`ray_lane`), each lane kept on one worker in this order
(tests/support/xdist_lanes.py); the tests without Ray fill whichever worker is free."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray import storage
from mmray.config import ShapesData
from mmray.data.shapes import generate_shapes
from tests.support.local_cluster import LocalCluster
from tests.support.seaweedfs import SeaweedServer, start_seaweedfs
from tests.support.xdist_lanes import OWN_RAY_AND_TRAINING, SESSION, record_lanes

pytest_plugins = ["tests.support.xdist_lanes"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# The README walk (tests/readme) runs only under `make test-readme`, which sets MMRAY_README_WALK=1.
collect_ignore_glob = [] if os.environ.get("MMRAY_README_WALK") else ["readme/*"]
COCO_MINI = Path(os.environ.get("MMRAY_COCO_MINI", REPO_ROOT.parent / "shared" / "data" / "coco-mini"))


def pytest_configure(config: pytest.Config) -> None:
    """Commands started by the tests take Ctrl-C (SIGINT) as at a terminal, also when pytest itself was
    started in the background of a script: such a shell starts it with SIGINT ignored, which its children
    would inherit, and a Python started that way never turns SIGINT into KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The 80 real COCO 2017 images with their official annotations."""
    if not (COCO_MINI / "annotations" / "captions_train2017.json").is_file():
        pytest.skip(f"coco-mini not found at {COCO_MINI} (set MMRAY_COCO_MINI)")
    return COCO_MINI


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


def _wait_until_writable(bucket_uri: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    probe = storage.join(bucket_uri, "_probe")
    while True:
        try:
            storage.ensure_bucket(bucket_uri)
            storage.write_bytes(probe, b"ok")
            storage.delete(probe)
            return
        except storage.StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def s3_env(seaweedfs: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the AWS variables at the test server; returns a fresh bucket URI."""
    for name, value in seaweedfs.client_env.items():
        monkeypatch.setenv(name, value)
    bucket = f"s3://mmray-{uuid.uuid4().hex[:12]}"
    _wait_until_writable(bucket)
    return bucket


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shapes dataset: 120 train + 40 val images."""
    root = tmp_path_factory.mktemp("shapes") / "tiny"
    config = ShapesData(source="shapes", root=str(root), images=160, val_images=40, seed=7)
    generate_shapes(config, str(root))
    return root


SESSION_RAY_CPUS = 4
"""Logical CPUs of the session's Ray: a training subprocess (2 workers) fits beside the served test apps."""
_SESSION_RAY: list[str] = []


def _own_ray(item: pytest.Item) -> bool:
    return item.get_closest_marker("own_ray") is not None or "no_in_process_ray" in getattr(item, "fixturenames", ())


@pytest.fixture(scope="session")
def ray_cluster(seaweedfs: SeaweedServer) -> Iterator[str]:
    """The session's Ray (one node, `SESSION_RAY_CPUS`): its GCS address. Its workers reach the test S3 server
    as a cluster's nodes reach theirs (credentials in their environment, not in each job's)."""
    from mmray.cluster.connection import EMBEDDED_TRAIN_SETTINGS

    python_path = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {
        **os.environ,
        **EMBEDDED_TRAIN_SETTINGS,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(python_path)),  # workers import `tests` (test-only tasks)
        "RAY_AUTH_MODE": "disabled",
        **seaweedfs.client_env,
    }
    env.pop("RAY_ADDRESS", None)
    root = Path(tempfile.mkdtemp(prefix="mmray-ray-", dir="/tmp"))  # Ray's socket paths stay under 108 bytes
    cluster = LocalCluster(root, env, cpus=SESSION_RAY_CPUS)
    try:
        cluster.start_head()
        _SESSION_RAY.append(f"127.0.0.1:{cluster.gcs_port}")
        yield _SESSION_RAY[0]
    finally:
        _SESSION_RAY.clear()
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _ray_address(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands join the session's Ray (started for tests that use `ray_cluster`); `own_ray` tests' commands
    start their own."""
    if _own_ray(request.node):
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    elif "ray_cluster" in request.fixturenames or _SESSION_RAY:
        monkeypatch.setenv("RAY_ADDRESS", request.getfixturevalue("ray_cluster"))


@pytest.fixture(scope="session")
def ray_session(ray_cluster: str) -> Iterator[None]:
    """This process joined to the session's Ray, for in-process Ray Train, Ray Data and Serve tests."""
    import ray

    from mmray.cluster.connection import connect

    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ray_cluster
    try:
        connect()
    finally:
        if previous is None:
            del os.environ["RAY_ADDRESS"]
        else:
            os.environ["RAY_ADDRESS"] = previous
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def no_in_process_ray() -> None:
    """For modules whose commands start a local Ray of their own (sorted before the session's Ray starts)."""


TRAINING_LANE_FILES = {"test_training.py", "test_tune_runs.py"}
"""Modules of Ray Train and Tune runs that share the lane of the tests with a Ray of their own."""


def ray_lane(item: pytest.Item) -> str | None:
    """The xdist lane of a test that uses Ray: `ray-own-and-training` (a Ray of its own, training and tune
    runs) or `ray-session` (the session's Ray: serving, indexing, streaming); None for a test without Ray.
    The heaviest Ray tests share one lane: run beside each other on 2 cores they took 18:26 against 15:57–17:50."""
    if _own_ray(item) or item.path.name in TRAINING_LANE_FILES:
        return OWN_RAY_AND_TRAINING
    if {"ray_cluster", "ray_session"} & set(getattr(item, "fixturenames", ())):
        return SESSION
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests with a Ray of their own first (the session's Ray starts after them); under xdist, the Ray tests
    in their lanes; tests marked `gpu` run only where CUDA is available."""
    items.sort(key=lambda item: not _own_ray(item))  # stable: the order within each group stays
    lanes = {item.nodeid: lane for item in items if (lane := ray_lane(item)) is not None}
    record_lanes(config, lanes)
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
