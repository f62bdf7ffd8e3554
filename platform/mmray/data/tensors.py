"""A split held in memory as tensors: decoded images and tokenised captions."""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from mmray import storage
from mmray.data.coco import CocoDataset
from mmray.data.image_files import ImageDecodeError, decode_image
from mmray.data.transforms import image_to_array
from mmray.models.tokenizers import Tokenizer
from mmray.progress import track

logger = logging.getLogger(__name__)


@dataclass
class SplitTensors:
    """Images (uint8) and every caption (token ids) of a split, with caption -> image indices."""

    image_ids: torch.Tensor  # (N,) int64, COCO image ids
    images: torch.Tensor  # (N, 3, S, S) uint8
    caption_ids: torch.Tensor  # (C, L) int64 token ids
    caption_mask: torch.Tensor  # (C, L) bool
    caption_image: torch.Tensor  # (C,) int64 index into images
    caption_offsets: torch.Tensor  # (N + 1,) captions of image i are [offsets[i], offsets[i+1])

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])


def _load_array(uri: str, size: int) -> np.ndarray | str:
    """The resized image, or the reason it could not be read."""
    try:
        return image_to_array(decode_image(storage.read_bytes(uri), uri), size)
    except (ImageDecodeError, storage.StorageError) as exc:
        return str(exc)


def split_to_tensors(
    dataset: CocoDataset, tokenizer: Tokenizer, image_size: int, progress: bool = True, threads: int = 4
) -> SplitTensors:
    """Decode and resize every image and tokenise every caption of `dataset`.

    Images that cannot be read are left out with a warning naming their ids.
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        loaded = list(
            track(
                pool.map(lambda r: _load_array(r.image_uri, image_size), dataset.records),
                "decoding images",
                total=len(dataset.records),
                enabled=progress,
            )
        )
    failed = [(r.image_id, item) for r, item in zip(dataset.records, loaded, strict=True) if isinstance(item, str)]
    if failed:
        logger.warning(
            "%d images could not be read and are left out: %s",
            len(failed),
            "; ".join(f"{image_id}: {reason}" for image_id, reason in failed[:10]),
        )
    records = [r for r, item in zip(dataset.records, loaded, strict=True) if not isinstance(item, str)]
    arrays = [item for item in loaded if not isinstance(item, str)]
    if not records:
        raise ValueError(f"none of the {len(dataset.records)} images of {dataset.captions_uri} could be read")
    texts = [caption for r in records for caption in r.captions]
    counts = torch.tensor([len(r.captions) for r in records], dtype=torch.long)  # (N,)
    tokens = tokenizer.encode(texts)
    return SplitTensors(
        image_ids=torch.tensor([r.image_id for r in records], dtype=torch.long),
        images=torch.from_numpy(np.stack(arrays)),
        caption_ids=tokens.ids,
        caption_mask=tokens.mask,
        caption_image=torch.repeat_interleave(torch.arange(len(records)), counts),
        caption_offsets=torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
    )


def sample_caption_per_image(tensors: SplitTensors, generator: torch.Generator) -> torch.Tensor:
    """One caption index per image, drawn uniformly among the image's captions. -> (N,)"""
    starts = tensors.caption_offsets[:-1]  # (N,)
    counts = tensors.caption_offsets[1:] - starts  # (N,)
    draws = torch.rand(tensors.num_images, generator=generator)  # (N,)
    return starts + (draws * counts).long().clamp_max(counts - 1)  # (N,)


def tensors_to_arrays(tensors: SplitTensors) -> dict[str, np.ndarray]:
    """NumPy arrays of a split, for zero-copy sharing through Ray's object store."""
    return {name: getattr(tensors, name).numpy() for name in SplitTensors.__dataclass_fields__}


def tensors_from_arrays(arrays: dict[str, np.ndarray]) -> SplitTensors:
    """The inverse of `tensors_to_arrays`; shares memory with the (read-only) arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return SplitTensors(**{name: torch.from_numpy(array) for name, array in arrays.items()})
