"""The streaming training feed on Ray Data: read, decode, resize and tokenise on CPU actors."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray.data

if TYPE_CHECKING:
    from mmray.data.processor import Processor

logger = logging.getLogger(__name__)

READ_THREADS = 8
"""Images each decoding actor reads at once (reads from S3 wait on the network; PIL decodes outside the GIL)."""


class DecodeAndTokenize:
    """Batch transform: image URI → uint8 (3, S, S) through the processor; every caption of the row →
    token ids padded to the most captions of any image (`caption_count` says how many are real). In a Dataset
    the processor comes as an object-store reference, so the processes that only pass the Dataset on (Ray
    Train's controller, Ray Data's split coordinator) unpickle it without importing torch."""

    def __init__(self, processor: Processor | ray.ObjectRef[Processor], max_captions: int) -> None:
        self.processor: Processor = ray.get(processor) if isinstance(processor, ray.ObjectRef) else processor
        self.max_captions = max_captions
        self.readers = ThreadPoolExecutor(READ_THREADS)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.processor.image.size
        length = self.processor.tokenizer.max_length
        images, keep = [], []
        uris = [str(uri) for uri in batch["image_uri"]]
        for row, pixels in enumerate(self.readers.map(self.processor.pixels_or_reason, uris)):
            if isinstance(pixels, str):
                logger.warning("skipping image %s: %s", batch["image_id"][row], pixels)
                continue
            images.append(pixels.numpy())
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
        labels = batch.get("labels", np.zeros((len(batch["image_id"]), 0), np.float32))  # (n, K)
        result["labels"] = np.stack(list(labels[keep])).astype(np.float32) if labels.dtype == object else labels[keep]
        for name in ("object_count", "covered_fraction"):
            result[name] = batch[name][keep]
        return result


ROWS_PER_BLOCK = 16
"""Records per block of the stream's source: small blocks, their order drawn anew each epoch, and the
workers' shuffle buffer (`feeds.SHUFFLE_BUFFER_BATCHES` batches) mixing many of them make two epochs
share about as many in-batch pairs as two random shuffles (1.4× at 8192 rows in batches of 16)."""


def reshuffled_rows(table: pa.Table, seed: int, rows_per_block: int = ROWS_PER_BLOCK) -> Any:
    """A Ray Dataset of `table`'s rows whose block order is drawn anew at every pass over it (every epoch),
    the sequence of orders fixed by `seed` (no shuffle tasks: it needs no CPU beside the training workers)."""
    blocks = [table.slice(start, rows_per_block) for start in range(0, max(table.num_rows, 1), rows_per_block)]
    reseeded = ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True)
    # from_blocks describes each block here; from_arrow would run a task per block whose returns the driver
    # keeps (≈ 40 KB a block: 280 MB for 100k rows in blocks of 16)
    return ray.data.from_blocks(blocks).randomize_block_order(seed=reseeded)


def training_dataset(
    records: pa.Table, processor: Processor, seed: int, max_captions: int, decode_actors: int = 4, cpus: float = 1.0
) -> Any:
    """The split's records (`records_table`) reordered each epoch, decoded by up to `decode_actors` actors."""
    return reshuffled_rows(records, seed).map_batches(
        DecodeAndTokenize,
        fn_constructor_args=(ray.put(processor), max_captions),
        batch_size=256,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decode_actors),
        num_cpus=cpus,
    )
