"""The streaming training feed on Ray Data: decode, resize and tokenise on CPU tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray.data

from mmray import storage
from mmray.data.coco import CocoDataset
from mmray.data.image_files import ImageDecodeError, decode_image
from mmray.data.transforms import image_to_array
from mmray.models.tokenizers import Tokenizer


class DecodeAndTokenize:
    """Batch transform: image bytes -> uint8 (3, S, S); one random caption per image -> token ids."""

    def __init__(self, tokenizer: Tokenizer, image_size: int) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.rng = np.random.default_rng()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, texts, keep = [], [], []
        for row, (uri, captions) in enumerate(zip(batch["image_uri"], batch["captions"], strict=True)):
            try:
                image = decode_image(storage.read_bytes(str(uri)), str(uri))
            except (ImageDecodeError, storage.StorageError) as exc:
                print(f"[mmray] skipping image {batch['image_id'][row]}: {exc}", flush=True)
                continue
            images.append(image_to_array(image, self.image_size))
            texts.append(str(captions[self.rng.integers(len(captions))]))
            keep.append(row)
        tokens = self.tokenizer.encode(texts)
        return {
            "image_id": batch["image_id"][keep],
            "image": np.stack(images) if images else np.zeros((0, 3, self.image_size, self.image_size), np.uint8),
            "ids": tokens.ids.numpy(),
            "mask": tokens.mask.numpy(),
        }


def training_dataset(dataset: CocoDataset, tokenizer: Tokenizer, image_size: int) -> Any:
    """A Ray Dataset of the split, block order shuffled, decoded lazily each epoch."""
    items = [{"image_id": r.image_id, "image_uri": r.image_uri, "captions": list(r.captions)} for r in dataset.records]
    blocks = max(8, len(items) // 512)
    return (
        ray.data.from_items(items, override_num_blocks=blocks)
        .randomize_block_order()
        .map_batches(
            DecodeAndTokenize,
            fn_constructor_args=(tokenizer, image_size),
            batch_size=256,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=4),
        )
    )
