"""The frozen towers' pooled features of all of coco-mini, computed once and kept on disk under the
benchmark's storage root (keyed by the towers' configs and the captions file)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from mmray.config import TrainJob
from mmray.config.data import CocoData
from mmray.config.model import DualEncoderConfig
from mmray.data.sources import load_split
from mmray.data.tensors import split_to_tensors
from mmray.models.dual_encoder import DualEncoder
from mmray.models.registry import build_model, build_processor


@dataclass(frozen=True)
class Features:
    """Every image once and every caption, in the order mmray's split loader gives them."""

    image_ids: torch.Tensor  # (N,) COCO image ids
    images: torch.Tensor  # (N, D_img) image tower's pooled output
    texts: torch.Tensor  # (C, D_txt) text tower's pooled output
    caption_image: torch.Tensor  # (C,) each caption's image row


def _key(spec: TrainJob) -> str:
    model = spec.model
    assert isinstance(model, DualEncoderConfig)
    digest = hashlib.sha256((model.image.model_dump_json() + model.text.model_dump_json()).encode())
    assert isinstance(spec.data, CocoData) and spec.data.train is not None
    digest.update(Path(spec.data.train.captions).read_bytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def _compute(spec: TrainJob) -> Features:
    processor = build_processor(spec.model)
    split = split_to_tensors(load_split(spec.data, "train"), processor)
    model = build_model(spec.model, processor).eval()
    assert isinstance(model, DualEncoder)
    images = torch.cat(
        [
            model.encode_image_features(processor.normalize(split.images[i : i + 20])).pooled  # (20, D_img)
            for i in range(0, split.num_images, 20)
        ]
    )
    texts = torch.cat(
        [
            model.encode_text_features(split.caption_ids[i : i + 100], split.caption_mask[i : i + 100].bool()).pooled
            for i in range(0, split.num_captions, 100)
        ]
    )  # (C, D_txt)
    return Features(split.image_ids.clone(), images.float(), texts.float(), split.caption_image.clone())


def frozen_features(spec: TrainJob, cache_dir: Path) -> Features:
    """The job's towers over its training split (all of coco-mini), from `cache_dir` when computed before."""
    path = cache_dir / f"features-{_key(spec)}.pt"
    if path.exists():
        return Features(**torch.load(path))
    features = _compute(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(features.__dict__, path)
    return features
