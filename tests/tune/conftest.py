from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny shapes data of the tune tests is generated (once per session)."""
    return tmp_path_factory.mktemp("tune-data")


@pytest.fixture(scope="module", autouse=True)
def no_other_local_ray() -> None:
    """Each search starts its own local Ray; an in-process Ray left by earlier test modules would be a
    second instance on the machine, which Ray Train's placement-group cleaner cannot tell apart."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
