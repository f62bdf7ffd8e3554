"""The streaming training feed on Ray Data: read, decode, resize and tokenise on CPU actors."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray.data

from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.errors import ImageDecodeError, StorageError

logger = logging.getLogger(__name__)

READ_THREADS = 8
"""Images each decoding actor reads at once (reads from S3 wait on the network; PIL decodes outside the GIL)."""


class DecodeAndTokenize:
    """Batch transform: image URI → uint8 (3, S, S) through the processor; every caption of the row →
    token ids padded to the most captions of any image (`caption_count` says how many are real)."""

    def __init__(self, processor: Processor, max_captions: int) -> None:
        self.processor = processor
        self.max_captions = max_captions
        self.readers = ThreadPoolExecutor(READ_THREADS)

    def _pixels(self, uri: str) -> np.ndarray | Exception:
        try:
            return self.processor.array_from_uri(uri)
        except (ImageDecodeError, StorageError) as exc:
            return exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.processor.image.size
        length = self.processor.tokenizer.max_length
        images, keep = [], []
        for row, pixels in enumerate(self.readers.map(self._pixels, [str(uri) for uri in batch["image_uri"]])):
            if isinstance(pixels, Exception):
                logger.warning("skipping image %s: %s", batch["image_id"][row], pixels)
                continue
            images.append(pixels)
            keep.append(row)
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


def reshuffled_rows(items: list[dict[str, Any]], seed: int) -> Any:
    """A Ray Dataset of `items` in a new order at every pass over it (every epoch), the sequence of orders
    fixed by `seed`."""
    blocks = max(8, len(items) // 512)
    reseeded = ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True)
    return ray.data.from_items(items, override_num_blocks=blocks).random_shuffle(seed=reseeded)


def training_dataset(dataset: CocoDataset, processor: Processor, seed: int, decode_actors: int = 4) -> Any:
    """A Ray Dataset of the split, its records shuffled anew each epoch (`reshuffled_rows`), then decoded by a
    pool of up to `decode_actors` actors."""
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
    return reshuffled_rows(items, seed).map_batches(
        DecodeAndTokenize,
        fn_constructor_args=(processor, max_captions),
        batch_size=256,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decode_actors),
    )
