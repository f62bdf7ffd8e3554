"""COCO-protocol Recall@K measured through an index bundle, so approximate indexes count as served."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mmray.artifacts.index_bundle import load_index_bundle
from mmray.artifacts.model_bundle import open_bundle
from mmray.config.data import DataConfig
from mmray.data.sources import load_split, resolve_splits
from mmray.data.tensors import split_to_tensors
from mmray.errors import IndexBundleError
from mmray.metrics.retrieval import DEFAULT_KS, metrics_from_ranks
from mmray.tasks.evaluation import evaluation_context
from mmray.tasks.split_embedding import embed_split


def _first_hit_ranks(found: np.ndarray, wanted: np.ndarray, unanswered: int) -> torch.Tensor:
    """1-based rank of `wanted[i]` in `found[i]` (inf if absent), then `unanswered` infs. found: (q, k), wanted: (q,)"""
    hits = found == wanted[:, None]  # (q, k)
    positions = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)  # (q,)
    return torch.from_numpy(np.concatenate([positions, np.full(unanswered, np.inf)]).astype(np.float64))


SEARCH_DEPTH = 100


def recall_through_indexes(
    indexes: Mapping[str, Any],
    caption_owners: Mapping[str, Mapping[str, Any]],
    image_queries: tuple[np.ndarray, np.ndarray],
    caption_queries: tuple[np.ndarray, np.ndarray],
    missing: tuple[int, int] = (0, 0),
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> dict[str, Any]:
    """COCO-protocol Recall@K with each image and caption of a split as a query of the other corpus's
    index. image_queries: (image ids (N,), vectors (N, E)); caption_queries: (owning image ids (C,),
    vectors (C, E)); `missing`: images and captions that have no vector (failed), counted as misses."""
    k = max(SEARCH_DEPTH, *DEFAULT_KS)
    image_ids, image_vectors = image_queries
    owner_ids, text_vectors = caption_queries
    _, found_images = indexes["images"].search(text_vectors, k, nprobe, ef_search)  # (C, k)
    t2i = _first_hit_ranks(found_images, owner_ids, missing[1])
    _, found_captions = indexes["captions"].search(image_vectors, k, nprobe, ef_search)  # (N, k)
    found_owners = np.vectorize(lambda cid: caption_owners.get(str(cid), {}).get("image_id", -1))(found_captions)
    i2t = _first_hit_ranks(found_owners, image_ids, missing[0])
    metrics: dict[str, Any] = metrics_from_ranks(i2t, t2i)
    for key in ("i2t_medr", "t2i_medr"):
        metrics[key] = None if math.isinf(metrics[key]) else metrics[key]
    return metrics


def evaluate_index_bundle(
    data: DataConfig,
    index_uri: str,
    nprobe: int | None = None,
    ef_search: int | None = None,
    batch_size: int = 512,
    device: str = "auto",
) -> dict[str, Any]:
    """Embed the indexed split's images and captions with the bundle's model (on `device`) and query the
    indexes for the top `SEARCH_DEPTH` results each; a median rank beyond that depth is reported as null
    (an approximate index does not rank what it does not return)."""
    bundle = load_index_bundle(index_uri)
    if {"images", "captions"} - set(bundle.indexes):
        raise IndexBundleError(f"{index_uri} needs both an images and a captions index to measure Recall@K")
    model = open_bundle(bundle.manifest["model_bundle"])
    bundle.check_model(model.version)
    split = bundle.manifest["split"]
    if split not in resolve_splits(data):
        raise IndexBundleError(f"{index_uri} indexes split {split!r}, which the job's data section does not have")
    dataset = load_split(data, split)
    indexed = {key: tuple(entry.get("captions", ())) for key, entry in bundle.metadata.get("images", {}).items()}
    given = {str(r.image_id): tuple(r.captions) for r in dataset.records}
    if indexed != given:
        same = sum(1 for key, captions in given.items() if indexed.get(key) == captions)
        raise IndexBundleError(
            f"{index_uri} indexes {len(indexed)} images of split {split!r}, but the job's data has {len(given)} "
            f"images in that split, {same} of them the same (id and captions); evaluate it on the data it was "
            "built from, or rebuild the index from this data"
        )
    tensors = split_to_tensors(dataset, model.processor)
    context = evaluation_context(model, batch_size, device)
    image_vectors, text_vectors = embed_split(model.model, tensors, context)
    image_ids = tensors.image_ids.numpy()
    metrics = recall_through_indexes(
        bundle.indexes,
        bundle.metadata["captions"],
        (image_ids, image_vectors.cpu().numpy()),
        (image_ids[tensors.caption_image.numpy()], text_vectors.cpu().numpy()),
        nprobe=nprobe,
        ef_search=ef_search,
    )
    return {
        "index_bundle": index_uri,
        "model_version": bundle.model_version,
        "index_types": {kind: index.kind for kind, index in bundle.indexes.items()},
        "device": str(context.device),
        **metrics,
    }
