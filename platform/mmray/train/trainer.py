"""Driver side of training: prepares data, runs the TorchTrainer, writes the run's outputs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mmray import storage
from mmray.config import JobSpec, to_yaml
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import split_to_tensors, tensors_to_arrays
from mmray.models.factory import build_tokenizer
from mmray.plots import training_curves_png
from mmray.raycluster import connect
from mmray.train.bundle import FINAL_MODEL, MANIFEST
from mmray.train.loop import train_loop_per_worker
from mmray.train.ray_data_feed import training_dataset
from mmray.train.state import read_history

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A training run that failed after exhausting its retries."""


@dataclass
class TrainOutcome:
    """What a finished run leaves: its directory, final model bundle and final metrics."""

    run_dir: str
    model_bundle: str
    model_version: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "model_bundle": self.model_bundle,
            "model_version": self.model_version,
            **self.metrics,
        }


def _checkpoint_uri(path: str, storage_root: str) -> str:
    return f"{storage.S3_SCHEME}{path}" if storage.is_s3(storage_root) else path


def _loop_config(spec: JobSpec) -> dict[str, Any]:
    """Data and tokenizer prepared once on the driver and handed to every worker."""
    splits = resolve_splits(spec.data)
    train = load_split(spec.data, "train")
    tokenizer = build_tokenizer(spec.model, (c for r in train.records for c in r.captions))
    size = spec.model.image.image_size
    config: dict[str, Any] = {
        "spec": spec.model_dump(mode="json"),
        "tokenizer": tokenizer,
        "num_train_images": len(train.records),
    }
    if spec.train.loader == "memory":
        logger.info("decoding %d training images into the object store", len(train.records))
        config["train_arrays"] = ray.put(tensors_to_arrays(split_to_tensors(train, tokenizer, size)))
    else:
        config["train_dataset"] = training_dataset(train, tokenizer, size)
    if "val" in splits:
        val = load_split(spec.data, "val")
        config["val_arrays"] = ray.put(tensors_to_arrays(split_to_tensors(val, tokenizer, size)))
    return config


def _write_outputs(spec: JobSpec, run_dir: str, history: list[dict[str, Any]]) -> None:
    storage.write_text(storage.join(run_dir, "config.yaml"), to_yaml(spec))
    storage.write_text(storage.join(run_dir, "metrics.json"), json.dumps(history[-1] if history else {}, indent=2))
    storage.write_bytes(storage.join(run_dir, "curves.png"), training_curves_png(history, spec.name))


def run_training(spec: JobSpec) -> TrainOutcome:
    """Train `spec` on Ray Train; re-running the same name under the same root resumes the run."""
    if spec.kind != "train":
        raise ValueError(f"run_training needs a job of kind 'train', got {spec.kind!r}")
    connect()
    if storage.is_s3(spec.storage_root):
        storage.ensure_bucket(spec.storage_root)
    filesystem, storage_path = storage.pyarrow_filesystem(spec.storage_root)
    loop_config = _loop_config(spec)
    datasets = {"train": loop_config.pop("train_dataset")} if "train_dataset" in loop_config else None
    settings = spec.train
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=settings.checkpoint.num_to_keep,
                checkpoint_score_attribute=settings.checkpoint.score_attribute,
                checkpoint_score_order=settings.checkpoint.score_order,
            ),
            failure_config=FailureConfig(max_failures=settings.max_failures),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error is not None:
        raise TrainingError(f"training run {spec.name} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise TrainingError(f"training run {spec.name} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        history = read_history(Path(directory))
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    run_dir = storage.join(spec.storage_root, spec.name)
    bundle_uri = _checkpoint_uri(result.checkpoint.path, spec.storage_root)
    _write_outputs(spec, run_dir, history)
    storage.write_text(storage.join(run_dir, FINAL_MODEL), json.dumps({"model_bundle": bundle_uri}))
    return TrainOutcome(
        run_dir=run_dir if storage.is_s3(run_dir) else str(Path(run_dir).resolve()),
        model_bundle=bundle_uri,
        model_version=manifest["model_version"],
        metrics=history[-1] if history else {},
        history=history,
    )
