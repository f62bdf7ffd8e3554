"""Hostile uploads over HTTP on a real Serve app: every file of the damaged-image corpus, then random bytes and
mutated images (Hypothesis) sent to /v1/embed and /v1/search. Each is answered with a 200 or a 4xx naming
the field, never a 5xx, and no replica restarts (the same actors with the same process ids after)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from hypothesis import HealthCheck, given, settings
from ray.util.state import list_actors

from tests.serving.conftest import LIMITS, ServedApps
from tests.serving.helpers import b64, post
from tests.support.damaged_images import write_corpus
from tests.support.image_fuzz import hostile_bytes, seed_images

pytestmark = pytest.mark.slow
SEEDS = seed_images()


def replica_processes() -> dict[str, int]:
    """Actor id -> process id of every live replica of the open app."""
    assert ray.is_initialized()
    address = ray.get_runtime_context().gcs_address  # this test's Ray: other local instances may run
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    replicas = {a.actor_id: int(a.pid) for a in actors if str(a.class_name).startswith("ServeReplica:open:")}
    assert len(replicas) >= 3, f"model, retriever and ingress replicas expected: {replicas}"
    return replicas


def _answered(response_status: int, body: dict[str, object], field: str) -> None:
    assert response_status < 500, (response_status, body)
    if response_status != 200:
        assert response_status in (413, 422) and body.get("field") == field, (response_status, body)


def test_every_damaged_file_is_answered_without_a_5xx(served: ServedApps, tmp_path: Path) -> None:
    before = replica_processes()
    for sample in write_corpus(tmp_path / "corpus"):
        data = (tmp_path / "corpus" / sample.name).read_bytes()
        response = post(served.open_url, "/v1/embed", {"images": [b64(data)]})
        body = response.json()
        _answered(response.status_code, body, "images[0]")
        if sample.expect == "decodes" and sample.reference is not None:
            side = sample.reference.shape[0] * sample.reference.shape[1]
            assert response.status_code == (200 if side <= LIMITS["max_image_pixels"] else 413), (sample.name, body)
        elif sample.expect in ("refused", "too_large"):
            expected = 413 if sample.expect == "too_large" else 422
            assert response.status_code == expected, (sample.name, body)
    assert replica_processes() == before


def test_random_and_mutated_uploads_never_get_a_5xx_nor_restart_a_replica(served: ServedApps) -> None:
    before = replica_processes()

    @settings(max_examples=40, deadline=10_000, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=hostile_bytes(SEEDS))
    def answered(data: bytes) -> None:
        embedded = post(served.open_url, "/v1/embed", {"images": [b64(data)], "texts": ["a red circle"]})
        _answered(embedded.status_code, embedded.json(), "images[0]")
        found = post(served.open_url, "/v1/search", {"image": b64(data), "k": 3})
        _answered(found.status_code, found.json(), "image")

    answered()
    assert replica_processes() == before, "a replica restarted while answering hostile uploads"
