"""The Ray-free side of a training run's driver: the processor and data prepared and checked once, the
workers' loop config, and the run's outputs (config, metrics, curves, best and latest model pointers)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmray import storage
from mmray.artifacts.manifests import LATEST_MODEL, MANIFEST, holding_or_pointed, resolve_model_bundle
from mmray.artifacts.model_bundle import read_processor, warm_start_compatible
from mmray.config import TrainJob, to_yaml
from mmray.data.prepared import (
    load_split_tensors,
    manifest_fingerprint,
    prepared_split,
    shard_image_ids,
    shard_uris,
)
from mmray.data.processor import Processor
from mmray.data.record_columns import records_table
from mmray.data.records import ImageRecord
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import SplitTensors, tensors_to_arrays
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import BundleError, ConfigError, TrainingError, json_object, reading
from mmray.models.registry import build_processor
from mmray.pretrained import check_pretrained_files
from mmray.tasks.base import Score, Task
from mmray.tasks.registry import task_class
from mmray.train.augment import NAMES_SIDE, names_a_side
from mmray.train.curves import training_curves_png
from mmray.train.loader_choice import choose_loader
from mmray.train.run_pointers import Candidate, best_checkpoint, write_pointers
from mmray.train.run_record import METRICS
from mmray.train.shard_feed import PreparedShards
from mmray.train.state import TRAIN_STATE, checkpoint_history

logger = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What a finished run leaves: its directory, best and latest model bundles, final metrics."""

    run_dir: str
    model_bundle: str
    latest_bundle: str
    model_version: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Where the run and its bundles are, then its final metrics (the last line `mmray train` prints)."""
        where = {
            "run_dir": self.run_dir,
            "model_bundle": self.model_bundle,
            "latest_bundle": self.latest_bundle,
            "model_version": self.model_version,
        }
        return {**where, **json_metrics(self.metrics)}


def json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as strict JSON values: an unmeasured (NaN) score becomes null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def resolve_training_checkpoint(uri: str) -> str:
    """A checkpoint holding training state: `uri` itself, or the latest checkpoint of the run `uri`."""
    found = holding_or_pointed(uri, TRAIN_STATE, LATEST_MODEL)
    if found is None:
        raise ConfigError(
            f"continue_from {uri}: neither a training checkpoint ({TRAIN_STATE} is missing) nor a finished "
            f"training run ({LATEST_MODEL} is missing)"
        )
    return found


def run_processor(spec: TrainJob, training_texts: Sequence[str]) -> Processor:
    """A new processor for the model, or for a warm start the bundle's own (its vocabulary, its transform);
    a continued run keeps its checkpoint's processor as it is (the weights depend on it)."""
    if spec.continue_from:
        processor, model_config = read_processor(spec.continue_from)
        if model_config.kind != spec.model.kind:
            raise ConfigError(
                f"continue_from {spec.continue_from} holds a {model_config.kind!r} model; the job trains a "
                f"{spec.model.kind!r} model"
            )
        return processor
    if not spec.init_from:
        return build_processor(spec.model, training_texts)
    processor, model_config = read_processor(spec.init_from)
    if not warm_start_compatible(spec.model.kind, model_config.kind):
        raise ConfigError(
            f"init_from {spec.init_from} holds a {model_config.kind!r} model, which cannot initialise the "
            f"job's {spec.model.kind!r} model"
        )
    wanted = build_processor(spec.model, training_texts).image
    if wanted != processor.image:
        raise ConfigError(
            f"init_from {spec.init_from} preprocesses images as {processor.image}; the job's model config asks "
            f"for {wanted}: warm starts keep the bundle's preprocessing, so set the model's image settings to match"
        )
    if isinstance(processor.tokenizer, WordTokenizer):
        tokenizer, added = processor.tokenizer.extended(training_texts)
        if added:
            shown = ", ".join(added[:12]) + (", …" if len(added) > 12 else "")
            logger.warning(
                "the training texts have %d words that init_from's vocabulary lacks (%s); they are added, "
                "their embeddings start random",
                len(added),
                shown,
            )
            processor = Processor(processor.image, tokenizer)
    return processor


@dataclass
class DriverData:
    """What the driver prepares before Ray starts."""

    spec: TrainJob
    processor: Processor
    task_class: type[Task]
    score: Score
    num_train_examples: int
    max_captions: int
    """The most captions of any training image."""
    train_tensors: SplitTensors | None
    val_tensors: SplitTensors | None
    train_shards: PreparedShards | None = None
    """The prepared training split's shards, read by the workers themselves (loader shards)."""
    train_records: pa.Table | None = None
    """The training records as columns, streamed (loader ray_data without shards; the Python records are
    dropped once these exist)."""


def prepare_driver_data(spec: TrainJob, can_stream: bool = True) -> DriverData:
    """Everything the driver can do and check without Ray (`can_stream`: whether Ray Data can feed the run)."""
    if spec.init_from:
        spec = spec.model_copy(update={"init_from": storage.absolute_uri(resolve_model_bundle(spec.init_from))})
    if spec.continue_from:
        checkpoint_uri = storage.absolute_uri(resolve_training_checkpoint(spec.continue_from))
        history = checkpoint_history(checkpoint_uri)
        trained = int(history[-1]["epoch"]) if history else 0
        if trained >= spec.train.epochs:
            raise ConfigError(
                f"continue_from {checkpoint_uri} has trained {trained} epochs; train.epochs={spec.train.epochs} "
                f"would train none: raise train.epochs above {trained}"
            )
        spec = spec.model_copy(update={"continue_from": checkpoint_uri})
    check_pretrained_files(spec.model)
    splits = resolve_splits(spec.data)
    train = load_split(spec.data, "train")
    processor = run_processor(spec, [c for r in train.records for c in r.captions])
    cls = task_class(spec.task.kind)
    task_config, model_config = cls(spec.task, spec.model, processor).bind(train)
    spec = spec.model_copy(update={"task": task_config, "model": model_config})
    task = cls(spec.task, spec.model, processor)
    checkpoint = spec.train.checkpoint
    score = Score(checkpoint.score_attribute or task.score.metric, checkpoint.score_order or task.score.mode)
    loader = choose_loader(spec, task, len(train.records), processor.image.size, can_stream)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"loader": loader})})
    train_tensors, train_shards, train_records = None, None, None
    max_captions = max(len(r.captions) for r in train.records)
    if loader == "memory":
        logger.info("decoding %d training images", len(train.records))
        train_tensors = load_split_tensors(train, processor, spec.data.prepared, "train")
        if spec.train.augment.flip == "unless_sides":
            train_tensors.caption_extras[NAMES_SIDE] = names_a_side([c for r in train.records for c in r.captions])
        examples = _train_examples(spec, task, train_tensors)
    elif loader == "shards":
        assert spec.data.prepared is not None
        uri, manifest = prepared_split(spec.data.prepared, "train", train, processor.image)
        rows = [len(ids) for ids in shard_image_ids(uri, manifest)]
        train_shards = PreparedShards(shard_uris(uri, manifest), rows, manifest_fingerprint(manifest))
        examples = train_shards.num_rows
    else:
        examples = len(train.records)
        train_records = records_table(train.records)
    train_files = {r.image_uri for r in train.records}
    del train  # on a large split the records are most of the driver's memory
    if examples < spec.train.batch_size:
        raise ConfigError(
            f"train.batch_size {spec.train.batch_size} is larger than the training split ({examples} examples): "
            "no full batch; lower train.batch_size or use more data"
        )
    val = task.evaluation_split(load_split(spec.data, "val")) if "val" in splits else None
    if val is not None:
        warn_of_training_images(val.records, train_files)
    val_tensors = load_split_tensors(val, processor, spec.data.prepared, "val") if val is not None else None
    return DriverData(
        spec, processor, cls, score, examples, max_captions, train_tensors, val_tensors, train_shards, train_records
    )


def warn_of_training_images(val_records: Sequence[ImageRecord], train_files: set[str]) -> None:
    """A validation split holding training image files measures the model (and picks its best checkpoint) on
    what it trained on: said, naming them."""
    shared = [r.image_id for r in val_records if r.image_uri in train_files]
    if shared:
        many = f"all {len(val_records)}" if len(shared) == len(val_records) else f"{len(shared)} of {len(val_records)}"
        shown = ", ".join(map(str, shared[:10])) + (", …" if len(shared) > 10 else "")
        logger.warning(
            "%s validation images are also in the training split (image ids %s): their Recall@K and the best "
            "checkpoint measure images the model trains on; hold out other images for data.val",
            many,
            shown,
        )


def _train_examples(spec: TrainJob, task: Task, tensors: SplitTensors) -> int:
    """Training examples per epoch: the task's own (captions with targets), every caption
    (`data.captions_per_epoch: all`, which needs a batch of distinct images), or one per image."""
    captions = task.example_captions(tensors)
    if captions is not None:
        return int(captions.shape[0])
    if spec.data.captions_per_epoch == "all":
        if tensors.num_images < spec.train.batch_size:
            raise ConfigError(
                f"data.captions_per_epoch=all keeps each batch's images distinct, but the training split has "
                f"{tensors.num_images} images, fewer than train.batch_size {spec.train.batch_size}"
            )
        return tensors.num_captions
    return tensors.num_images


def loop_config(data: DriverData, share: Callable[[Any], Any]) -> dict[str, Any]:
    """What every rank's loop reads; decoded splits pass through `share` (Ray's `put`: into the object store
    once) and streamed ones are left to the runner."""
    config: dict[str, Any] = {
        "spec": data.spec,
        "processor": data.processor,
        "task_class": data.task_class,
        "score_metric": data.score.metric,
        "score_mode": data.score.mode,
        "num_train_examples": data.num_train_examples,
        "run_dir": storage.absolute_uri(storage.join(data.spec.storage_root, data.spec.name)),
        "storage_root": storage.absolute_uri(data.spec.storage_root),
    }
    if data.train_tensors is not None:
        config["train_arrays"] = share(tensors_to_arrays(data.train_tensors))
    if data.train_shards is not None:
        config["train_shards"] = data.train_shards
    if data.val_tensors is not None:
        config["val_arrays"] = share(tensors_to_arrays(data.val_tensors))
    return config


def write_outputs(spec: TrainJob, latest: str | None, candidates: Sequence[Candidate], score_mode: str) -> TrainOutcome:
    """config.yaml, curves.png, the best / latest model pointers and, last, metrics.json (the final summary and
    every epoch's metrics) of a finished run, from the URIs of its kept checkpoints."""
    if latest is None:
        raise TrainingError(f"training run {spec.name} finished without a checkpoint")
    history = checkpoint_history(latest)
    best = best_checkpoint(candidates, latest, score_mode)
    best_manifest = storage.join(best, MANIFEST)
    with reading(best_manifest, BundleError):
        model_version = str(json_object(storage.read_text(best_manifest))["model_version"])
    run_dir = storage.join(spec.storage_root, spec.name)
    storage.write_text(storage.join(run_dir, "config.yaml"), to_yaml(spec))
    storage.write_bytes(storage.join(run_dir, "curves.png"), training_curves_png(history, spec.name))
    write_pointers(run_dir, latest, best)
    outcome = TrainOutcome(
        run_dir=run_dir if storage.is_s3(run_dir) else str(Path(run_dir).resolve()),
        model_bundle=best,
        latest_bundle=latest,
        model_version=model_version,
        metrics=history[-1] if history else {},
        history=history,
    )
    record = {**outcome.summary(), "history": [json_metrics(epoch) for epoch in history]}
    storage.write_text(storage.join(run_dir, METRICS), json.dumps(record, indent=2))
    return outcome
