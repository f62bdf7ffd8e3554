"""The streaming training feed on Ray Data: read, decode, resize and tokenise on CPU actors."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray.data

from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.errors import ImageDecodeError, StorageError

logger = logging.getLogger(__name__)


class DecodeAndTokenize:
    """Batch transform: image URI → uint8 (3, S, S) through the processor; every caption of the row →
    token ids padded to the most captions of any image (`caption_count` says how many are real)."""

    def __init__(self, processor: Processor, max_captions: int) -> None:
        self.processor = processor
        self.max_captions = max_captions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.processor.image.size
        length = self.processor.tokenizer.max_length
        images, keep = [], []
        for row, uri in enumerate(batch["image_uri"]):
            try:
                images.append(self.processor.array_from_uri(str(uri)))
                keep.append(row)
            except (ImageDecodeError, StorageError) as exc:
                logger.warning("skipping image %s: %s", batch["image_id"][row], exc)
        ids = np.zeros((len(keep), self.max_captions, length), dtype=np.int64)
        mask = np.zeros((len(keep), self.max_captions, length), dtype=bool)
        counts = np.zeros(len(keep), dtype=np.int64)
        for out, row in enumerate(keep):
            captions = [str(c) for c in batch["captions"][row]][: self.max_captions]
            tokens = self.processor.tokenize(captions)
            ids[out, : len(captions)] = tokens.ids.numpy()
            mask[out, : len(captions)] = tokens.mask.numpy()
            counts[out] = len(captions)
        result = {
            "image_id": batch["image_id"][keep],
            "image": np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8),
            "caption_ids": ids,
            "caption_mask": mask,
            "caption_count": counts,
        }
        for name in ("labels", "object_count", "covered_fraction"):
            result[name] = batch[name][keep]
        return result


def training_dataset(dataset: CocoDataset, processor: Processor, seed: int) -> Any:
    """A Ray Dataset of the split, block order shuffled with `seed`, decoded lazily each epoch."""
    items = [
        {
            "image_id": r.image_id,
            "image_uri": r.image_uri,
            "captions": list(r.captions),
            "labels": np.asarray(r.labels, dtype=np.float32),
            "object_count": np.float32(r.object_count),
            "covered_fraction": np.float32(r.covered_fraction),
        }
        for r in dataset.records
    ]
    max_captions = max(len(r.captions) for r in dataset.records)
    blocks = max(8, len(items) // 512)
    return (
        ray.data.from_items(items, override_num_blocks=blocks)
        .randomize_block_order(seed=seed)
        .map_batches(
            DecodeAndTokenize,
            fn_constructor_args=(processor, max_captions),
            batch_size=256,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=4),
        )
    )
