"""`mmray pipeline` stopped: Ctrl-C exits 130 and SIGTERM 143, each saying that a rerun continues it; a rerun
continues a stopped search (its trials resumed) and finishes."""

from __future__ import annotations

import functools
import re
import signal
from pathlib import Path

import pytest
import yaml

from tests.train.conftest import last_json, run_mmray, stop_once, tiny_job, wait_for_line, write_job

pytestmark = pytest.mark.slow


def _stop_at(pipeline: Path, stop: signal.Signals, log: Path, pattern: str) -> tuple[int, str]:
    """`mmray pipeline PIPELINE` sent `stop` once a line matches `pattern`: its exit code and output."""
    return stop_once(["pipeline", str(pipeline)], stop, log, functools.partial(wait_for_line, log, pattern))


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

    code, text = _stop_at(pipeline, signal.SIGTERM, tmp_path / "1.log", r"trial \w+ epoch 1:")
    assert code == 143 and f"terminated: {said}" in text, text[-3000:]
    trial = re.findall(r"trial (\w+) epoch 1:", text)[0]
    code, text = _stop_at(pipeline, signal.SIGINT, tmp_path / "2.log", r"epoch 1/2 step")
    assert code == 130 and f"interrupted: {said}" in text, text[-3000:]
    assert f"trial {trial} epoch 2:" in text, "the rerun continued the stopped search's trial"
    stages = tmp_path / "runs" / "stop" / "stages"
    assert [path.name.split("-")[0] for path in stages.iterdir()] == ["tune"], "training is not recorded as done"

    result = run_mmray("pipeline", str(pipeline))
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json(result.stdout)["promoted"]
    assert sorted(path.name.split("-")[0] for path in stages.iterdir()) == ["evaluate", "train", "tune"]
