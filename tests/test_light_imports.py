"""Processes that start often and need no model code stay light: Ray Train starts a controller for every run
(every Tune trial too) and unpickles mmray's callbacks there before any worker starts; Serve starts an HTTP
ingress replica per app and per scaled replica, which checks requests and forwards them, and retriever replicas,
which search the index with vectors the model replicas embed. Importing torch,
torchvision and faiss would cost each of them seconds of CPU and about 700 MB of memory."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from mmray.train.pointer_callback import PointAtKept
from mmray.tune.reporting import ReportChannel, ReportThroughChannel

HEAVY = ("torch", "torchvision", "faiss", "transformers", "mmray.train.loop", "mmray.artifacts.model_bundle")


def _heavy_modules_after(code: str, stdin: bytes = b"") -> str:
    check = f"{code}; import sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", check], input=stdin, capture_output=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result.stdout.decode().strip().splitlines()[-1]


def test_the_train_controller_unpickles_mmrays_callbacks_without_torch(tmp_path: Path) -> None:
    callbacks = [PointAtKept(str(tmp_path), "max"), ReportThroughChannel(ReportChannel(None, None))]
    loaded = "import pickle, sys; callbacks = pickle.loads(sys.stdin.buffer.read())"
    assert _heavy_modules_after(loaded, pickle.dumps(callbacks)) == "[]"


def test_the_http_ingress_and_the_state_keeper_import_no_model_code() -> None:
    imported = "from mmray.serving.ingress import Ingress; from mmray.serving.following import StateKeeper"
    assert _heavy_modules_after(imported) == "[]"


def test_the_retriever_imports_faiss_but_no_model_code() -> None:
    imported = "from mmray.serving.retriever_deployment import RetrieverDeployment"
    assert _heavy_modules_after(imported) == "['faiss']"
