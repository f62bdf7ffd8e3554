from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny shapes data of the tune tests is generated (once per session)."""
    return tmp_path_factory.mktemp("tune-data")
