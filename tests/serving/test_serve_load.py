"""A shorter run of benchmarks/serve_load.py: concurrent searches and embeds while a model replica is killed
and while a hot reload swaps the model and index; no request fails, and searches answer from one pair or the
other. Deployed beside the test apps already on the session's Ray, which stay up."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.serving.conftest import ServedApps

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_no_request_fails_when_a_replica_dies_or_the_app_reloads(served: ServedApps, tmp_path: Path) -> None:
    from serve_load import measure

    result = measure(seconds=6.0, concurrency=6, work=tmp_path)
    steady, killed, reloaded = result["phases"]
    for phase in result["phases"]:
        assert phase["requests"] > 10 and phase["failed"] == 0, phase
    versions = result["versions"]
    assert steady["search_versions"] == killed["search_versions"] == [versions["a"]]
    assert versions["b"] in reloaded["search_versions"], "the reload took effect within its phase"
    health = requests.get(served.open_url + "/healthz", timeout=30).json()
    assert health["ready"] is True, f"the other apps stayed up: {health}"


def test_the_replica_killed_is_one_of_the_load_apps_own() -> None:
    """Other apps on the cluster (the test apps here) serve a model of the same deployment name."""
    from serve_load import APP, load_app_model_replicas

    actors = [SimpleNamespace(class_name=f"ServeReplica:{app}:{name}", pid=pid)
              for pid, (app, name) in enumerate([("open", "model_retrieval"), ("locked", "model_retrieval"),
                                                 (APP, "Ingress"), (APP, "model_retrieval")])]  # fmt: skip
    assert [actor.pid for actor in load_app_model_replicas(actors)] == [3]
