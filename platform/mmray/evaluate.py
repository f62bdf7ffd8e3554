"""Evaluating a saved model bundle on a job's validation split (COCO protocol)."""

from __future__ import annotations

from typing import Any

from mmray.config import JobSpec
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import split_to_tensors
from mmray.train.bundle import local_bundle, read_bundle
from mmray.train.evaluation import evaluate_split


def evaluate_bundle(spec: JobSpec, bundle_uri: str, split: str = "val") -> dict[str, Any]:
    """Recall@1/5/10 both ways and median ranks of the bundle's model on `split` of `spec.data`."""
    with local_bundle(bundle_uri) as directory:
        bundle = read_bundle(directory)
    if split not in resolve_splits(spec.data):
        raise ValueError(f"the job's data has no {split!r} split to evaluate on")
    image = bundle.spec.model.image
    dataset = load_split(spec.data, split)
    tensors = split_to_tensors(dataset, bundle.tokenizer, image.image_size)
    metrics = evaluate_split(bundle.model, tensors, image.mean, image.std, spec.train.eval_batch_size)
    return {
        "model_bundle": bundle_uri,
        "model_version": bundle.manifest["model_version"],
        "split": split,
        "images": tensors.num_images,
        "captions": int(tensors.caption_ids.shape[0]),
        **metrics,
    }
