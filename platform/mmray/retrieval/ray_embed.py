"""Embedded batches from Ray Data: decoding on CPU tasks, embedding on a pool of model actors, rows in order."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.data

from mmray.cluster.connection import ray_log_level
from mmray.config.indexing import CorpusKind, IndexSettings
from mmray.data.processor import Processor
from mmray.retrieval.embed import BatchSource, DecodeImages, EmbedRows


def ray_data_batches(bundle_uri: str, kind: CorpusKind, settings: IndexSettings, processor: Processor) -> BatchSource:
    """Rows embedded on Ray Data: `settings.embed_actors` actors of `settings.gpus_per_actor` GPUs each."""

    def batches(rows: list[dict[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        logging.getLogger("ray.data").setLevel(ray_log_level())  # its progress logs with `mmray -v`; mmray logs shards
        dataset: Any = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // settings.batch_size))
        if kind == "images":
            dataset = dataset.map_batches(
                DecodeImages, fn_constructor_args=(processor,), batch_size=settings.batch_size
            )
        dataset = dataset.map_batches(
            EmbedRows,
            fn_constructor_args=(bundle_uri, kind),
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(size=settings.embed_actors),
            num_gpus=settings.gpus_per_actor,
        )
        yield from dataset.iter_batches(batch_format="numpy")

    return batches
