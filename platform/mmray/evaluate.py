"""Evaluating a saved model bundle on a job's validation split (COCO protocol)."""

from __future__ import annotations

from typing import Any

import torch

from mmray.config import JobSpec
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import SplitTensors, split_to_tensors
from mmray.metrics import retrieval_metrics
from mmray.train.bundle import LoadedBundle, open_bundle
from mmray.train.evaluation import embed_split


def embed_split_with_bundle(
    spec: JobSpec, bundle: LoadedBundle, split: str
) -> tuple[SplitTensors, torch.Tensor, torch.Tensor]:
    """A split of `spec.data` as tensors, with the bundle model's image (N, E) and caption (C, E) embeddings."""
    if split not in resolve_splits(spec.data):
        raise ValueError(f"the job's data has no {split!r} split to evaluate on")
    image = bundle.spec.model.image
    tensors = split_to_tensors(load_split(spec.data, split), bundle.tokenizer, image.image_size)
    image_vectors, text_vectors = embed_split(bundle.model, tensors, image.mean, image.std, spec.train.eval_batch_size)
    return tensors, image_vectors, text_vectors


def evaluate_bundle(spec: JobSpec, bundle_uri: str, split: str = "val") -> dict[str, Any]:
    """Recall@1/5/10 both ways and median ranks of the bundle's model on `split` of `spec.data`."""
    bundle = open_bundle(bundle_uri)
    tensors, image_vectors, text_vectors = embed_split_with_bundle(spec, bundle, split)
    return {
        "model_bundle": bundle_uri,
        "model_version": bundle.manifest["model_version"],
        "split": split,
        "images": tensors.num_images,
        "captions": int(tensors.caption_ids.shape[0]),
        **retrieval_metrics(image_vectors, text_vectors, tensors.caption_image),
    }
