"""Ray Train starts a controller process for every run (every Tune trial too) and unpickles mmray's callbacks
there before any worker starts: their modules must not pull in torch or the model code, whose import takes
the controller seconds of CPU on the run's critical path."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from mmray.train.run_pointers import PointAtKept
from mmray.tune.reporting import ReportChannel, ReportThroughChannel

HEAVY = ("torch", "torchvision", "transformers", "mmray.train.loop", "mmray.artifacts.model_bundle")


def test_the_train_controller_unpickles_mmrays_callbacks_without_torch(tmp_path: Path) -> None:
    callbacks = [PointAtKept(str(tmp_path), "max"), ReportThroughChannel(ReportChannel(None, None))]
    check = (
        "import pickle, sys; callbacks = pickle.loads(sys.stdin.buffer.read()); "
        f"print([type(c).__name__ for c in callbacks], [m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], input=pickle.dumps(callbacks), capture_output=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.decode().strip() == "['PointAtKept', 'ReportThroughChannel'] []"
