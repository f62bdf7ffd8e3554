"""The test suite's Ray tells its processes their own cluster's address, as the embedded Ray does: Ray Train's
helper actors look their cluster up by address, and on a machine with another local Ray an address-less
lookup fails with "Found multiple active Ray instances"."""

from __future__ import annotations

import os

import pytest


@pytest.mark.usefixtures("ray_session")
def test_the_session_rays_workers_know_its_address(ray_cluster: str) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def ray_address() -> str | None:
        return os.environ.get("RAY_ADDRESS")

    assert ray.get(ray_address.remote(), timeout=60) == ray_cluster
