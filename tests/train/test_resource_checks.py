"""A run asking for resources the Ray it runs on can never give fails at once, naming them: an embedded
local Ray refuses, a cluster (RAY_ADDRESS, which may add nodes) says what the run waits for."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from mmray.errors import ConfigError
from mmray.raycluster import check_worker_resources
from tests.train.conftest import run_mmray, tiny_job, write_job

pytestmark = pytest.mark.slow


@pytest.mark.own_ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_on_a_machine_without_any_fail_at_once(data_root: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "gpu"))
    result = run_mmray("train", str(job), "train.use_gpu=true", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "needs 2 GPU (the cluster has 0), which this local Ray can never provide" in result.stderr


def test_more_cpus_than_the_ray_has_are_refused_locally_and_awaited_on_a_cluster(
    ray_session: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"needs 1024 CPU \(the cluster has \d+\).*use fewer workers or CPUs"):
        check_worker_resources(2, 512.0, False, "training run cpus")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with caplog.at_level(logging.WARNING, logger="mmray.raycluster"):
        check_worker_resources(2, 512.0, False, "training run cpus")
    assert "it waits until the cluster adds them" in caplog.text
