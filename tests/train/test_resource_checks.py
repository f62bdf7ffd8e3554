"""A run asking for resources this local Ray can never give fails at once, naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train.conftest import run_mmray, tiny_job, write_job

pytestmark = pytest.mark.slow


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_on_a_machine_without_any_fail_at_once(data_root: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "gpu"))
    result = run_mmray("train", str(job), "train.use_gpu=true", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs 2 GPU (the cluster has 0), which this local Ray can never provide" in result.stderr


def test_more_cpus_than_the_machine_has_fail_at_once(data_root: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "cpus"))
    result = run_mmray("train", str(job), "train.cpus_per_worker=512", timeout=120)
    assert result.returncode == 2 and "needs 1024 CPU" in result.stderr and "use fewer workers" in result.stderr
