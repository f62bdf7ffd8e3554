"""GPU smoke test: a few training steps and an evaluation under NCCL, on every GPU the machine has
(up to two). Skipped where CUDA is absent; run it with `make gpu-smoke` whenever a GPU machine is lent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.conftest import last_json, run_mmray, tiny_job, write_job

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_train_steps_and_evaluation_on_gpus(data_root: Path, tmp_path: Path) -> None:
    import torch

    workers = min(2, torch.cuda.device_count())
    job = tiny_job(data_root, tmp_path / "runs", "gpu", epochs=1, use_gpu=True, num_workers=workers)
    result = run_mmray("train", str(write_job(tmp_path / "job.yaml", job)))
    assert result.returncode == 0, result.stderr[-3000:]
    final = last_json(result.stdout)
    assert final["epoch"] == 1 and 0.0 <= final["t2i_R@10"] <= 1.0
    evaluated = run_mmray("evaluate", str(tmp_path / "job.yaml"), "--checkpoint", final["model_bundle"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
