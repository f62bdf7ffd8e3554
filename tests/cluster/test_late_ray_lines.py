"""Ray's late log lines (its repeats, folded and printed when the driver disconnects) go to stderr: a
command's stdout keeps only its own output (tables, JSON), as scripts reading it expect."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_ray_lines_flushed_at_disconnect_never_reach_stdout(ray_cluster: str) -> None:
    command = [sys.executable, "-m", "tests.support.repeated_ray_lines"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the same line again" in result.stderr, "the actors' lines reach the user"
    assert result.stdout == '{"result": true}\n', result.stdout[-3000:]
