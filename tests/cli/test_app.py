"""The `mmray` command itself: version, short help, a directory given as a job."""

from __future__ import annotations

from pathlib import Path

from tests.train.conftest import run_mmray


def test_version_short_help_and_a_directory_as_job(tmp_path: Path) -> None:
    version = run_mmray("--version")
    assert version.returncode == 0 and version.stdout.startswith("mmray ")
    short = run_mmray("train", "-h")
    assert short.returncode == 0 and "Usage: mmray train" in short.stdout and "Example:" in short.stdout
    directory = run_mmray("train", str(tmp_path))
    assert directory.returncode == 2 and "is a directory" in directory.stderr and "Traceback" not in directory.stderr
