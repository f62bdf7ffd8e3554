"""`mmray pipeline` stopped: Ctrl-C exits 130 and SIGTERM 143, each saying that a rerun continues it; a rerun
continues a stopped search (its trials resumed) and finishes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.train.conftest import REPO_ROOT, last_json, mmray_command, run_mmray, tiny_job, write_job
from tests.train.test_training import _wait_for_line

pytestmark = pytest.mark.slow


def _stop_once(pipeline: Path, stop: signal.Signals, log: Path, pattern: str) -> tuple[int, str]:
    with log.open("w") as output:
        process = subprocess.Popen(mmray_command("pipeline", str(pipeline)), cwd=REPO_ROOT, stdout=output,
                                   stderr=output, text=True, env=os.environ.copy(), start_new_session=True)  # fmt: skip
        try:
            _wait_for_line(log, pattern, process)
            os.kill(process.pid, stop)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, log.read_text()


@pytest.mark.own_ray
def test_a_pipeline_stopped_while_tuning_or_training_says_so_and_a_rerun_continues_it(tmp_path: Path) -> None:
    """SIGTERM in the tune stage, then Ctrl-C in the training stage of the rerun, which continued the stopped
    search's trial; the last rerun finishes and promotes."""
    data_root = tmp_path / "data"
    tune = {"kind": "tune", "name": "unused", "base": tiny_job(data_root, "unused", "base"),
            "overrides": {"train.epochs": 2}, "space": {"train.lr": "grid([0.004])"},
            "tune": {"num_samples": 1, "trial": {"num_workers": 1, "runner": "local"}}}  # fmt: skip
    write_job(tmp_path / "stop-tune.yaml", tune)
    holdout = {"source": "shapes", "root": str(data_root), "images": 140, "val_images": 100, "seed": 33}
    spec = {"kind": "pipeline", "name": "stop", "storage_root": str(tmp_path / "runs"), "tune": "stop-tune.yaml",
            "runner": "local", "index": None, "holdout": holdout}  # fmt: skip
    pipeline = tmp_path / "stop.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    said = f"pipeline stop: the stages it finished are recorded; `mmray pipeline {pipeline}` continues it"

    code, text = _stop_once(pipeline, signal.SIGTERM, tmp_path / "1.log", r"trial \w+ epoch 1:")
    assert code == 143 and f"terminated: {said}" in text, text[-3000:]
    trial = re.findall(r"trial (\w+) epoch 1:", text)[0]
    code, text = _stop_once(pipeline, signal.SIGINT, tmp_path / "2.log", r"epoch 1/2 step")
    assert code == 130 and f"interrupted: {said}" in text, text[-3000:]
    assert f"trial {trial} epoch 2:" in text, "the rerun continued the stopped search's trial"
    stages = tmp_path / "runs" / "stop" / "stages"
    assert [path.name.split("-")[0] for path in stages.iterdir()] == ["tune"], "training is not recorded as done"

    result = run_mmray("pipeline", str(pipeline))
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json(result.stdout)["promoted"]
    assert sorted(path.name.split("-")[0] for path in stages.iterdir()) == ["evaluate", "train", "tune"]
