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

import pytest

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


@pytest.mark.slow
def test_the_train_controller_gets_the_loop_config_as_a_reference(
    ray_session: None, tiny_shapes: Path, tmp_path: Path
) -> None:
    """Ray Train hands `train_loop_config` to the controller as well as to the workers: it holds only an
    object-store reference, whose value (the spec, processor and task class) the workers fetch."""
    import ray

    from mmray.config import load_job
    from mmray.train.ray_context import LOOP_CONFIG
    from mmray.train.trainer import build_trainer
    from tests.train.conftest import tiny_job, write_job

    job = tiny_job(tiny_shapes, tmp_path / "runs", "referenced", epochs=1, num_workers=1)
    split = {s: {"captions": str(tiny_shapes / f"annotations/captions_{s}.json"),
                 "images": str(tiny_shapes / "images" / s)} for s in ("train", "val")}  # fmt: skip
    job["data"] = {"source": "coco", **split}
    prepared = build_trainer(load_job(write_job(tmp_path / "job.yaml", job)))
    handed = prepared.trainer.train_loop_config
    assert list(handed) == [LOOP_CONFIG] and isinstance(handed[LOOP_CONFIG], ray.ObjectRef)
    config = ray.get(handed[LOOP_CONFIG])
    assert config["task_class"].__name__ == "RetrievalTask" and config["spec"].name == "referenced"


@pytest.mark.slow
def test_the_train_controller_unpickles_a_streamed_dataset_without_torch(ray_session: None, tiny_shapes: Path) -> None:
    """A `train.loader=ray_data` run hands its Dataset to the controller (and Ray Data's split coordinator),
    which unpickle it: the decoding transform's processor travels as a reference the decode actors fetch."""
    import ray

    from mmray.data.coco import load_coco
    from mmray.data.processor import ImageTransform, Processor
    from mmray.data.record_columns import records_table
    from mmray.data.shapes import split_paths
    from mmray.data.tokenizers import WordTokenizer
    from mmray.train.ray_data_feed import training_dataset

    paths = split_paths(str(tiny_shapes), "train")
    records = load_coco(paths.captions, paths.images, paths.instances, progress=False).records
    processor = Processor(ImageTransform(32, (0.5,) * 3, (0.5,) * 3), WordTokenizer.build(["a red square"], 8))
    dataset = training_dataset(records_table(records), processor, seed=3, max_captions=5)
    joined = f"import ray, sys; ray.init(address={ray.get_runtime_context().gcs_address!r}, log_to_driver=False)"
    loaded = f"{joined}; dataset = ray.cloudpickle.loads(sys.stdin.buffer.read())"
    assert _heavy_modules_after(loaded, ray.cloudpickle.dumps(dataset)) == "[]"
