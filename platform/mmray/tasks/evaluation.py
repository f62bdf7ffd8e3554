"""Evaluating a model bundle (or the model a train job starts from) on a split with its task's metrics."""

from __future__ import annotations

from typing import Any

from mmray import storage
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.config.data import DataConfig
from mmray.config.jobs import TrainJob
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import SplitTensors, split_to_tensors
from mmray.devices import pick_device
from mmray.errors import BundleError, ConfigError
from mmray.models.registry import build_processor
from mmray.pretrained import check_pretrained_files
from mmray.tasks.base import EvalContext, Task
from mmray.tasks.registry import task_class


def load_split_tensors(data: DataConfig, split: str, bundle: LoadedBundle, task: Task) -> SplitTensors:
    """A split of `data` as `task` evaluates it, preprocessed by the bundle's own processor."""
    available = resolve_splits(data)
    if split not in available:
        raise ConfigError(f"the data section has no {split!r} split to evaluate on; it has {', '.join(available)}")
    return split_to_tensors(task.evaluation_split(load_split(data, split)), bundle.processor)


def evaluation_context(bundle: LoadedBundle, batch_size: int, device: str = "auto") -> EvalContext:
    """One process evaluating on `device` (`auto`: its GPU when it has one); the bundle's model moves there."""
    where = pick_device(device)
    bundle.model.to(where)
    return EvalContext(rank=0, world=1, device=where, batch_size=batch_size, processor=bundle.processor)


def evaluate_bundle(
    data: DataConfig,
    bundle_uri: str,
    split: str = "val",
    batch_size: int = 512,
    figures_dir: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The task metrics of the bundle's model on `split` of `data` (e.g. Recall@K for retrieval), computed
    on `device`; the task's figures (confusion matrices, scatter plots) are written to `figures_dir` and listed."""
    bundle = open_bundle(bundle_uri)
    if bundle.task_config is None:
        raise BundleError(f"{bundle_uri} records no task, so mmray cannot tell which metrics to compute")
    task = task_class(bundle.task_config.kind)(bundle.task_config, bundle.model_config, bundle.processor)
    # by default evaluation/<split> in the directory holding the bundle (a training run's, for its checkpoints)
    parent = bundle.uri.rstrip("/").rsplit("/", 1)[0] if "/" in bundle.uri.rstrip("/") else "."
    figures = figures_dir or storage.join(parent, "evaluation", split)
    report = _report(bundle, task, data, split, batch_size, figures, device)
    return {"model_bundle": bundle.uri, "model_version": bundle.version, **report}


def evaluate_starting_model(
    spec: TrainJob, split: str = "val", batch_size: int = 512, figures_dir: str | None = None, device: str = "auto"
) -> dict[str, Any]:
    """The task metrics of the model a train job starts from, before any training (a pretrained pair's zero-shot
    figures); figures go to `figures_dir`, by default <storage_root>/<name>/evaluation/<split>-start."""
    if spec.init_from or spec.continue_from:
        raise ConfigError(
            f"{spec.name} starts from a bundle ({spec.init_from or spec.continue_from}); evaluate that bundle instead"
        )
    check_pretrained_files(spec.model)
    reference = load_split(spec.data, "train" if "train" in resolve_splits(spec.data) else split)
    processor = build_processor(spec.model, [text for record in reference.records for text in record.captions])
    cls = task_class(spec.task.kind)
    task_config, model_config = cls(spec.task, spec.model, processor).bind(reference)
    task = cls(task_config, model_config, processor)
    bundle = LoadedBundle(task.build_model().eval(), processor, model_config, task_config, {}, f"{spec.name} (start)")
    figures = figures_dir or storage.join(spec.storage_root, spec.name, "evaluation", f"{split}-start")
    return {"model": spec.model.kind, **_report(bundle, task, spec.data, split, batch_size, figures, device)}


def _report(
    bundle: LoadedBundle, task: Task, data: DataConfig, split: str, batch_size: int, figures_dir: str, device: str
) -> dict[str, Any]:
    tensors = load_split_tensors(data, split, bundle, task)
    context = evaluation_context(bundle, batch_size, device)
    metrics, figures = task.evaluation_report(bundle.model, tensors, context)
    written = []
    for name, png in figures.items():
        written.append(storage.join(figures_dir, name))
        storage.write_bytes(written[-1], png)
    return {
        "task": task.config.kind,
        "split": split,
        "device": str(context.device),
        "images": tensors.num_images,
        "captions": tensors.num_captions,
        **metrics,
        **({"figures": written} if written else {}),
    }
