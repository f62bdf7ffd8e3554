"""The GPU check (benchmarks/gpu/check.py) on the CPU, with the packages a bare GPU machine lacks made
unimportable: every task kind resumes exactly, the seed model is measured, and nothing needs Ray or faiss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

ABSENT_ON_THE_GPU_MACHINE = ("ray", "faiss", "boto3", "botocore", "s3transfer", "fastapi", "starlette", "optuna")
RUN_WITHOUT = """
import importlib.abc, runpy, sys
absent = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)")
        return None
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_check_runs_on_a_cpu_without_ray_or_faiss(tmp_path: Path) -> None:
    script = REPO_ROOT / "benchmarks" / "gpu" / "check.py"
    args = ["--device", "cpu", "--size", "tiny", "--steps", "2", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT, ",".join(ABSENT_ON_THE_GPU_MACHINE), str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"] is True
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [task["task"] for task in report["tasks"]] == ["retrieval", "predict", "vae", "gan", "caption"]
    for task in report["tasks"]:
        assert task["ok"] and task["largest_relative_difference"] == 0.0, task
        assert task["precision"] == report["auto"], "every task trains in the precision auto chose"
    gan = next(task for task in report["tasks"] if task["task"] == "gan")
    assert {"train_loss_discriminator", "train_loss_generator"} <= set(gan["epoch_2_losses"])
    seed = report["seed_model"]
    assert seed["samples_per_s"] > 0 and seed["tflops_per_step"] > 0
    assert "mfu" not in seed, "no bf16 peak is claimed for a CPU"
