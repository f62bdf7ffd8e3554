"""GPU smoke test: a short training run and an evaluation under NCCL, on every GPU the machine has (up to two).
Skipped where CUDA is absent; run it with `make gpu-smoke` whenever a GPU machine is lent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.train.conftest import last_json, run_mmray, tiny_job, write_job

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")
CHANCE_R10 = 10 / 96  # 96 validation images


def test_train_steps_and_evaluation_on_gpus(data_root: Path, tmp_path: Path) -> None:
    import torch

    workers = min(2, torch.cuda.device_count())
    job = tiny_job(data_root, tmp_path / "runs", "gpu", epochs=3, use_gpu=True, num_workers=workers)
    result = run_mmray("train", str(write_job(tmp_path / "job.yaml", job)))
    assert result.returncode == 0, result.stderr[-3000:]
    timed = "bf16 / fp32 / fp16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16 / fp32"
    assert f"auto: {timed} timed at the first step)" in result.stderr, "trained on the GPUs, precision timed"
    chosen = re.search(r"precision auto: (\w+), timed on the first batch", result.stderr)
    assert chosen, result.stderr[-3000:]
    final = last_json(result.stdout)
    assert final["epoch"] == 3 and final["precision"] == chosen.group(1)
    assert final["t2i_R@10"] > 2 * CHANCE_R10 and final["i2t_R@10"] > 2 * CHANCE_R10, "it learned on the GPU"

    evaluated = run_mmray("evaluate", str(tmp_path / "job.yaml"), "--checkpoint", final["model_bundle"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = last_json(evaluated.stdout)
    for key in RECALL_KEYS:  # the same model on the same split: the same ranks, up to bf16 ties
        assert abs(again[key] - final[key]) <= 2 / 96, (key, again[key], final[key])
