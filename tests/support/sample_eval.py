"""A VAE task's sample evaluation in one process and on two gloo ranks (spawned, so it lives in a module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmray.config import ShapesData, TrainJob
from mmray.data.shapes import generate_shapes
from mmray.tasks.base import EvalContext
from mmray.train.driver import DriverData, prepare_driver_data
from tests.support.gloo import gloo_group
from tests.support.serving_bundles import dual_encoder_bundle

ENCODER = {
    "embed_dim": 16,
    "image": {"kind": "small_cnn", "image_size": 32, "width": 8, "blocks": 3},
    "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "max_length": 24},
}


def prepared(tmp: Path) -> DriverData:
    """A VAE job on 96 + 24 shapes images, its R-precision measured by a (random) dual encoder bundle."""
    shapes = ShapesData(source="shapes", root=str(tmp / "data"), images=120, val_images=24, seed=4)
    root = tmp / "data" / "tiny"
    generate_shapes(shapes.model_copy(update={"root": str(root)}), str(root))
    evaluator = dual_encoder_bundle(root, tmp / "evaluator")
    evaluation = {"evaluator": str(evaluator), "images": 21, "candidates": 5, "grid_captions": 2, "grid_samples": 2}
    job = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "sample-eval",
            "storage_root": str(tmp / "runs"),
            "data": {"source": "shapes", "root": str(root), "images": 120, "val_images": 24, "seed": 4},
            "model": {"kind": "conditional_vae", "encoder": ENCODER, "latent_dim": 4, "width": 8},
            "task": {"kind": "vae", "evaluation": evaluation},
            "train": {"batch_size": 8, "eval_batch_size": 5, "num_workers": 1},
        }
    )
    return prepare_driver_data(job, can_stream=False)


def evaluate(data: DriverData, rank: int, world: int) -> tuple[dict[str, float], int]:
    """The task's evaluation report, and how many samples this rank drew."""
    task = data.task_class(data.spec.task, data.spec.model, data.processor)
    torch.manual_seed(0)
    model = task.build_model()
    drawn = [0]
    sample = model.sample

    def counted(condition: torch.Tensor, *args: Any) -> torch.Tensor:
        drawn[0] += condition.shape[0]
        return sample(condition, *args)

    model.sample = counted  # type: ignore[method-assign]
    context = EvalContext(rank, world, torch.device("cpu"), 5, data.processor, data.train_tensors)
    assert data.val_tensors is not None
    return task.evaluation_report(model, data.val_tensors, context)[0], drawn[0]


def two_rank_worker(rank: int, data: DriverData, out: str, port: int) -> None:
    with gloo_group(rank, 2, port):
        metrics, drawn = evaluate(data, rank, 2)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "drawn": drawn}))
