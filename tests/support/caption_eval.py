"""A caption task's evaluation in one process and on two gloo ranks (spawned, so it lives in a module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmray.config import TrainJob
from mmray.tasks.base import EvalContext
from mmray.train.driver import DriverData, prepare_driver_data
from tests.support.gloo import gloo_group


def caption_job(data_root: Path, storage_root: Path, train_image_tower: bool) -> TrainJob:
    encoder = {
        "embed_dim": 16,
        "image": {"kind": "small_cnn", "image_size": 32, "width": 8, "blocks": 3},
        "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "max_length": 24},
    }
    return TrainJob.model_validate(
        {
            "kind": "train",
            "name": "caption-eval",
            "storage_root": str(storage_root),
            "data": {"source": "shapes", "root": str(data_root), "images": 96, "val_images": 24, "seed": 4},
            "model": {
                "kind": "caption_decoder",
                "encoder": encoder,
                "train_image_tower": train_image_tower,
                "width": 16,
                "layers": 1,
                "heads": 2,
            },
            "task": {"kind": "caption", "evaluation": {"images": 21, "beam": 2, "nearest_neighbour_baseline": True}},
            "train": {"batch_size": 8, "eval_batch_size": 5, "num_workers": 1},
        }
    )


def evaluate(data: DriverData, rank: int, world: int, times: int = 1) -> tuple[dict[str, float], int]:
    """The task's evaluation report `times` over, and how many images its image tower encoded in all."""
    task = data.task_class(data.spec.task, data.spec.model, data.processor)
    torch.manual_seed(0)
    model = task.build_model()
    encoded = [0]
    model.encoder.image_encoder.register_forward_hook(
        lambda _m, inputs, _o: encoded.__setitem__(0, encoded[0] + inputs[0].shape[0])
    )
    context = EvalContext(rank, world, torch.device("cpu"), 5, data.processor, data.train_tensors)
    assert data.val_tensors is not None
    metrics: dict[str, float] = {}
    for _ in range(times):
        metrics = task.evaluation_report(model, data.val_tensors, context)[0]
    return metrics, encoded[0]


def two_rank_worker(rank: int, data: DriverData, out: str, port: int) -> None:
    with gloo_group(rank, 2, port):
        metrics, encoded = evaluate(data, rank, 2)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "encoded": encoded}))


def prepared(data_root: Path, storage_root: Path, train_image_tower: bool) -> DriverData:
    return prepare_driver_data(caption_job(data_root, storage_root, train_image_tower), can_stream=False)


def read_rank(out: Path, rank: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / f"rank{rank}.json").read_text())
    return loaded
