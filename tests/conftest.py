"""Shared fixtures: repository paths, the SeaweedFS S3 server, small generated datasets."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray import storage
from mmray.config import ShapesData
from mmray.data.shapes import generate_shapes
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedServer, start_seaweedfs

REPO_ROOT = Path(__file__).resolve().parents[1]
# The README walk (tests/readme) runs only under `make test-readme`, which sets MMRAY_README_WALK=1.
collect_ignore_glob = [] if os.environ.get("MMRAY_README_WALK") else ["readme/*"]
COCO_MINI = Path(os.environ.get("MMRAY_COCO_MINI", REPO_ROOT.parent / "shared" / "data" / "coco-mini"))


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
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
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


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One embedded local Ray for in-process tests; its workers can import `tests` (test-only tasks)."""
    import ray

    from mmray.raycluster import connect

    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def no_in_process_ray() -> Iterator[None]:
    """For modules whose commands start a local Ray of their own: the in-process Ray of earlier modules
    is shut down meanwhile (Ray Train's placement-group cleaner cannot tell two local instances apart and
    logs a traceback) and started again after."""
    import ray

    from mmray.raycluster import connect

    running = ray.is_initialized()
    if running:
        ray.shutdown()
    yield
    if running:
        connect(num_cpus=2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA is available."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
