"""A split held in memory as tensors: decoded images, tokenised captions and per-image targets."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.data.records import ImageRecord
from mmray.errors import DataError
from mmray.progress import track

logger = logging.getLogger(__name__)


IMAGE_FEATURES = "image_features"
"""Image extra: a frozen image tower's pooled output per image (N, D_img)."""
TEXT_FEATURES = "text_features"
"""Caption extra: a frozen text tower's pooled output per caption (C, D_txt)."""


@dataclass
class SplitTensors:
    """Images (uint8), every caption (token ids) with caption → image indices, and per-image targets."""

    image_ids: torch.Tensor  # (N,) int64, COCO image ids
    images: torch.Tensor  # (N, 3, S, S) uint8
    caption_ids: torch.Tensor  # (C, L) int64 token ids
    caption_mask: torch.Tensor  # (C, L) bool
    caption_image: torch.Tensor  # (C,) int64 index into images
    caption_offsets: torch.Tensor  # (N + 1,) captions of image i are [offsets[i], offsets[i+1])
    labels: torch.Tensor  # (N, K) float32 multi-hot over the split's categories (K may be 0)
    object_count: torch.Tensor  # (N,) float32
    covered_fraction: torch.Tensor  # (N,) float32
    boxes: torch.Tensor  # (N, M, 4) float32 xywh, zero-padded to the most boxes of any image
    box_count: torch.Tensor  # (N,) int64
    caption_targets: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (C,) float32, NaN if absent
    # Tensors a task derived on the workers, one row per image (N, ...) or per caption (C, ...),
    # e.g. a frozen tower's features; batches carry them under their names when a task asks.
    image_extras: dict[str, torch.Tensor] = field(default_factory=dict)
    caption_extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_captions(self) -> int:
        return int(self.caption_ids.shape[0])


def _caption_targets(records: list[ImageRecord]) -> dict[str, torch.Tensor]:
    """Each target name any caption carries -> (C,) float32 over all captions, NaN where a caption lacks it."""
    per_caption = [targets for r in records for targets in (r.caption_targets or ({},) * len(r.captions))]
    names = sorted({name for targets in per_caption for name in targets})
    return {name: torch.tensor([t.get(name, float("nan")) for t in per_caption], dtype=torch.float32) for name in names}


def left_out_unreadable(failed: Sequence[tuple[object, str]], total: int, uri: str, strict: bool = False) -> None:
    """Warn of the images that could not be read, (image id, why) each, or with `strict` refuse them; refuse
    a split none of whose `total` images could be read."""
    if failed:
        shown = "; ".join(f"{image_id}: {why}" for image_id, why in failed[:10])
        if strict:
            raise DataError(f"{len(failed)} images could not be read (data.on_bad_record=error): {shown}")
        logger.warning("%d images could not be read and are left out: %s", len(failed), shown)
    if len(failed) == total:
        raise DataError(f"none of the {total} images of {uri} could be read")


def split_to_tensors(
    dataset: CocoDataset,
    processor: Processor,
    progress: bool = True,
    threads: int = 4,
    pixels_of: Callable[[ImageRecord], torch.Tensor | str] | None = None,
) -> SplitTensors:
    """Decode and resize every image (or take its pixels from `pixels_of`, e.g. prepared shards) and tokenise
    every caption of `dataset` with `processor`; images that cannot be read are left out with a warning."""
    load = pixels_of or (lambda r: processor.pixels_or_reason(r.image_uri))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoding = pool.map(load, dataset.records)
        loaded = list(track(decoding, "decoding images", total=len(dataset.records), enabled=progress))
    failed = [(r.image_id, item) for r, item in zip(dataset.records, loaded, strict=True) if isinstance(item, str)]
    left_out_unreadable(failed, len(loaded), dataset.captions_uri)
    records = [r for r, item in zip(dataset.records, loaded, strict=True) if not isinstance(item, str)]
    pixels = [item for item in loaded if not isinstance(item, str)]
    texts = [caption for r in records for caption in r.captions]
    counts = torch.tensor([len(r.captions) for r in records], dtype=torch.long)  # (N,)
    tokens = processor.tokenize(texts)
    return SplitTensors(
        image_ids=torch.tensor([r.image_id for r in records], dtype=torch.long),
        images=torch.stack(pixels),
        caption_ids=tokens.ids,
        caption_mask=tokens.mask,
        caption_image=torch.repeat_interleave(torch.arange(len(records)), counts),
        caption_offsets=torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
        labels=torch.tensor([list(r.labels) for r in records], dtype=torch.float32).reshape(len(records), -1),
        object_count=torch.tensor([r.object_count for r in records], dtype=torch.float32),
        covered_fraction=torch.tensor([r.covered_fraction for r in records], dtype=torch.float32),
        boxes=pad_sequence(
            [torch.tensor(r.boxes, dtype=torch.float32).reshape(-1, 4) for r in records], batch_first=True
        ),
        box_count=torch.tensor([len(r.boxes) for r in records], dtype=torch.long),
        caption_targets=_caption_targets(records),
    )


def sample_caption_per_image(offsets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption index per image, drawn uniformly among the image's captions. offsets: (N + 1,) -> (N,)"""
    starts = offsets[:-1]  # (N,)
    counts = offsets[1:] - starts  # (N,)
    draws = torch.rand(starts.shape[0], generator=generator)  # (N,)
    return starts + (draws * counts).long().clamp_max(counts - 1)  # (N,)


_NAMED_FIELDS = ("caption_targets", "image_extras", "caption_extras")
"""Fields holding name → tensor maps; their arrays are stored as `<field>/<name>`."""


def tensors_to_arrays(tensors: SplitTensors) -> dict[str, np.ndarray]:
    """NumPy arrays of a split, for zero-copy sharing through Ray's object store."""
    arrays = {f.name: getattr(tensors, f.name).numpy() for f in fields(SplitTensors) if f.name not in _NAMED_FIELDS}
    for group in _NAMED_FIELDS:
        arrays.update({f"{group}/{name}": values.numpy() for name, values in getattr(tensors, group).items()})
    return arrays


def tensors_from_arrays(arrays: dict[str, np.ndarray]) -> SplitTensors:
    """The inverse of `tensors_to_arrays`; shares memory with the (read-only) arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = {name: torch.from_numpy(a) for name, a in arrays.items() if "/" not in name}
        named: dict[str, dict[str, torch.Tensor]] = {group: {} for group in _NAMED_FIELDS}
        for key, array in arrays.items():
            if "/" in key:
                group, name = key.split("/", 1)
                named[group][name] = torch.from_numpy(array)
        return SplitTensors(**plain, **named)  # type: ignore[arg-type]  # plain: the tensor fields
