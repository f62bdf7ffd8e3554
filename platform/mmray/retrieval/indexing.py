"""The index job: embed a split (on Ray Data, or in this process if small), build faiss indexes, publish a bundle."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mmray import storage
from mmray.artifacts.index_bundle import corpus_metadata, write_index_bundle
from mmray.artifacts.manifests import resolve_model_bundle
from mmray.artifacts.model_bundle import open_bundle
from mmray.config import IndexJob
from mmray.config.indexing import CorpusKind, IndexSettings
from mmray.data.coco import CocoDataset
from mmray.data.prepared import PixelLocations, pixel_locations, prepared_split
from mmray.data.sources import load_split
from mmray.errors import DataError
from mmray.index.faiss_index import IndexSpec, VectorIndex, build_index, check_trainable
from mmray.models.embedding import as_embedding_model
from mmray.retrieval.embed import corpus_plan, embed_corpus, local_batches, read_shards
from mmray.retrieval.evaluate import recall_through_indexes

logger = logging.getLogger(__name__)


@dataclass
class IndexOutcome:
    index_bundle: str
    model_version: str
    sizes: dict[str, int]
    failed: dict[str, list[dict[str, Any]]]
    metrics: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "index_bundle": self.index_bundle,
            "model_version": self.model_version,
            "sizes": self.sizes,
            "failed": {kind: len(rows) for kind, rows in self.failed.items()},
        }


def index_spec(settings: IndexSettings) -> IndexSpec:
    """The faiss build parameters of an `index` config section (its `use_gpu_index` is the spec's `use_gpu`)."""
    shared = {spec_field.name for spec_field in fields(IndexSpec)} - {"use_gpu"}
    return IndexSpec(**settings.model_dump(include=shared), use_gpu=settings.use_gpu_index)


def corpus_size(dataset: CocoDataset, kind: CorpusKind) -> int:
    """Rows of a corpus: one per image, or one per caption."""
    return dataset.caption_count if kind == "captions" else len(dataset.records)


def chosen_runner(settings: IndexSettings, dataset: CocoDataset) -> str:
    """Where the rows are embedded: `settings.runner`, or for `auto` this process when the corpora hold at most
    `local_max_rows` rows and no more than one CPU actor is asked (Ray's start-up would dominate), else Ray Data."""
    if settings.runner != "auto":
        return settings.runner
    rows = sum(corpus_size(dataset, kind) for kind in settings.corpus)
    one_cpu_actor = settings.embed_actors == 1 and settings.gpus_per_actor == 0
    return "local" if one_cpu_actor and rows <= settings.local_max_rows else "ray_data"


def run_index_job(spec: IndexJob) -> IndexOutcome:
    """Embed `spec.index.corpus` of split `spec.index.split` with the bundle `spec.checkpoint` (`chosen_runner`),
    build one index per corpus and write the bundle to `<storage_root>/<name>/index`. Embedding shards are kept
    under the run, so a re-run embeds only what is missing; an index that the corpora are too small to train is
    refused before anything is embedded."""
    bundle_uri = resolve_model_bundle(spec.checkpoint)
    if not storage.is_s3(bundle_uri):
        bundle_uri = os.path.abspath(bundle_uri)
    bundle = open_bundle(bundle_uri)
    as_embedding_model(bundle.model, bundle_uri)
    settings = spec.index
    dataset = load_split(spec.data, settings.split)
    for kind in settings.corpus:
        check_trainable(index_spec(settings), corpus_size(dataset, kind), kind)
    runner = chosen_runner(settings, dataset)
    if runner == "local":
        logger.info("embedding %s in this process (no Ray; index.runner=%s)", settings.split, settings.runner)
    else:
        from mmray.cluster.connection import connect
        from mmray.retrieval.ray_embed import ray_data_batches

        connect()
    run_dir = storage.join(spec.storage_root, spec.name)
    indexes: dict[str, VectorIndex] = {}
    embedded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    failed: dict[str, list[dict[str, Any]]] = {}
    prepared: PixelLocations | None = None
    if "images" in settings.corpus and spec.data.prepared is not None:
        # images prepared with the bundle's preprocessing (checked) are read instead of decoded
        uri, manifest = prepared_split(spec.data.prepared, settings.split, dataset, bundle.processor.image)
        prepared = pixel_locations(uri, manifest)
    for kind in settings.corpus:
        plan = corpus_plan(dataset, kind, settings.shard_size, bundle.version, prepared)
        shards = plan.directory(storage.join(run_dir, "embeddings"))
        if runner == "local":
            batches = local_batches(bundle, bundle_uri, kind, settings.batch_size)
        else:
            batches = ray_data_batches(bundle_uri, kind, settings, bundle.processor)
        embed_corpus(plan, shards, batches)
        ids, vectors, failures = read_shards(shards, plan.shard_count)
        embedded[kind] = (ids, vectors)
        failed[kind] = [{"id": row_id, "error": reason} for row_id, reason in failures]
        if failures:
            logger.warning("%d %s could not be embedded and are not indexed: ids %s", len(failures), kind,
                           ", ".join(str(i) for i, _ in failures[:10]))  # fmt: skip
        if not len(ids):
            first = failures[0][1] if failures else "none reported"
            raise DataError(
                f"none of the {len(plan.rows)} {kind} of split {settings.split!r} could be embedded (the first "
                f"failure: {first}); nothing to index"
            )
        indexes[kind] = build_index(vectors, ids, index_spec(settings))
        logger.info("%s: %s index over %d vectors", kind, indexes[kind].kind, indexes[kind].size)
    index_uri = storage.join(run_dir, "index")
    metadata = corpus_metadata(dataset)
    write_index_bundle(
        index_uri,
        indexes,
        metadata,
        {
            "model_version": bundle.version,
            "model_bundle": bundle_uri,
            "split": settings.split,
            "embedded_by": runner,
            "build": settings.model_dump(mode="json"),
            "failed": failed,
        },
    )
    metrics: dict[str, Any] = {}
    if set(settings.corpus) == {"images", "captions"}:  # Recall@K, the vectors just embedded as queries: no second pass
        (image_ids, image_vectors), (caption_ids, text_vectors) = embedded["images"], embedded["captions"]
        logger.info("Recall@K: the %d images and %d captions just embedded, queried through the new indexes",
                    len(image_ids), len(caption_ids))  # fmt: skip
        captions = metadata["captions"]
        owners = np.array([captions[str(cid)]["image_id"] for cid in caption_ids.tolist()], dtype=np.int64)
        missing = (len(failed["images"]), len(failed["captions"]))
        recall = recall_through_indexes(indexes, captions, (image_ids, image_vectors), (owners, text_vectors), missing)
        metrics = {"index_types": {kind: index.kind for kind, index in indexes.items()}, **recall}
    return IndexOutcome(
        index_bundle=index_uri if storage.is_s3(index_uri) else os.path.abspath(index_uri),
        model_version=bundle.version,
        sizes={kind: index.size for kind, index in indexes.items()},
        failed=failed,
        metrics=metrics,
    )
