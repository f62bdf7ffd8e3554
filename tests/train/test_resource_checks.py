"""A run asking for resources the Ray it runs on can never give fails at once, naming them: GPUs this machine
lacks before a local Ray starts; CPUs an embedded local Ray lacks; a cluster (RAY_ADDRESS, which may add
nodes) says what the run waits for."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from mmray.cluster.connection import check_worker_resources
from mmray.errors import ConfigError
from tests.support.cli import invoke_mmray, ray_never_started
from tests.train.conftest import tiny_job, write_job

pytestmark = pytest.mark.slow


@pytest.mark.own_ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_on_a_machine_without_any_fail_at_once(data_root: Path, tmp_path: Path) -> None:
    """Before the data is read or a local Ray starts, for a run and for a search."""
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root / "never-generated", tmp_path / "runs", "gpu"))
    with ray_never_started():
        result = invoke_mmray("train", str(job), "train.use_gpu=true")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    said = " ".join(result.stderr.split())
    assert "training run gpu needs 2 GPU (this machine has 0 that PyTorch can use)" in said, said
    assert "which a local Ray can never provide; set train.use_gpu=false" in said
    assert not (data_root / "never-generated").exists() and not (tmp_path / "runs" / "gpu").exists()

    search = {"kind": "tune", "name": "gpu-search", "storage_root": str(tmp_path / "runs"),
              "base": yaml.safe_load(job.read_text()), "space": {"train.lr": "loguniform(1e-4, 1e-2)"},
              "tune": {"num_samples": 1, "trial": {"num_workers": 1, "use_gpu": True}}}  # fmt: skip
    with ray_never_started():
        tuned = invoke_mmray("tune", str(write_job(tmp_path / "tune.yaml", search)))
    assert tuned.returncode == 2 and "each trial of gpu-search needs 1 GPU" in " ".join(tuned.stderr.split())


def test_more_cpus_than_the_ray_has_are_refused_locally_and_awaited_on_a_cluster(
    ray_session: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"needs 1024 CPU \(the cluster has \d+\).*use fewer workers or CPUs"):
        check_worker_resources(2, 512.0, False, "training run cpus")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with caplog.at_level(logging.WARNING, logger="mmray.cluster.connection"):
        check_worker_resources(2, 512.0, False, "training run cpus")
    assert "it waits until the cluster adds them" in caplog.text
