from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray.config import TrainJob
from mmray.train.run_record import Rerun, Runner, check_run_directory, record_job

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_job(data_root: Path, storage_root: str | Path, name: str, **train: Any) -> dict[str, Any]:
    """A job that trains in seconds: 480 train / 96 val shapes images, a narrow CNN, 2 workers."""
    return {
        "kind": "train",
        "name": name,
        "storage_root": str(storage_root),
        "data": {"source": "shapes", "root": str(data_root), "images": 576, "val_images": 96, "seed": 1},
        "model": {
            "kind": "dual_encoder",
            "embed_dim": 32,
            "image": {"kind": "small_cnn", "width": 8, "blocks": 4},
            "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 40},
        },
        "task": {"kind": "retrieval", "loss": {"kind": "infonce"}},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "lr": 0.003,
            "num_workers": 2,
            "log_every_steps": 5,
            "eval_batch_size": 64,
            **train,
        },
    }


def write_job(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def mmray_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "mmray"), *args]


def run_mmray(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mmray_command(*args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def last_json(output: str) -> dict[str, Any]:
    return dict(json.loads(output.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-data")


def stop_once(
    args: Sequence[str], stop: signal.Signals, log: Path, ready: Callable[[subprocess.Popen[str]], None]
) -> tuple[int, str]:
    """`mmray ARGS` sent `stop` once `ready(process)` returns: its exit code and output."""
    with log.open("w") as output:
        process = subprocess.Popen(mmray_command(*args), cwd=REPO_ROOT, stdout=output, stderr=output, text=True,
                                   env=os.environ.copy(), start_new_session=True)  # fmt: skip
        try:
            ready(process)
            os.kill(process.pid, stop)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, log.read_text()


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not re.search(pattern, log.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no line matched {pattern!r} (process exit code {process.poll()})")
        time.sleep(0.2)


def prepare_run(spec: TrainJob, rerun: Rerun = "check", runner: Runner = "ray") -> None:
    """What `mmray train` does before training: check the run directory, then record the job in it."""
    check_run_directory(spec, rerun, runner)
    record_job(spec)
