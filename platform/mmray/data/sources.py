"""Turning a job's data section into COCO splits on disk or S3, and loading them."""

from __future__ import annotations

from functools import partial

from mmray.config.data import CocoData, CocoSplit, DataConfig
from mmray.data.child_load import CHILD_LOAD_BYTES, annotation_bytes, load_in_child
from mmray.data.coco import CocoDataset, load_coco
from mmray.data.shapes import ensure_shapes
from mmray.errors import ConfigError


def resolve_splits(config: DataConfig) -> dict[str, CocoSplit]:
    """The COCO files of each split the section gives; the shapes dataset is generated here on first use."""
    if isinstance(config, CocoData):
        return {name: split for name, split in (("train", config.train), ("val", config.val)) if split is not None}
    _, splits = ensure_shapes(config)
    return splits


def load_split(
    config: DataConfig, split: str, progress: bool = True, child_load_bytes: int = CHILD_LOAD_BYTES
) -> CocoDataset:
    """Load one split's records with the bad-record policy of the data section; annotation files of at least
    `child_load_bytes` together are parsed in a child process (`child_load`)."""
    splits = resolve_splits(config)
    if split not in splits:
        raise ConfigError(f"data has no {split!r} split; it gives {', '.join(splits)}")
    paths = splits[split]
    load = partial(load_coco, paths.captions, paths.images, paths.instances, progress=progress, **config.coco_options())
    files = [paths.captions, *([paths.instances] if paths.instances else [])]
    if annotation_bytes(files) >= child_load_bytes:
        return load_in_child(load, f"the {split} split ({paths.captions})")
    return load()
