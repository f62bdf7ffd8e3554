"""Frozen towers cost once: their features are computed once per split, kept under a key of
everything they depend on, and the heads train and evaluate from them with the same results."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch

from mmray.config.model import DualEncoderConfig, SmallCnnConfig, SmallTransformerConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES, SplitTensors
from mmray.models.registry import build_processor
from mmray.tasks.base import EvalContext, StepContext
from mmray.tasks.feature_cache import CACHE_DIR, cached_features, features_key
from mmray.tasks.retrieval import RetrievalTask
from mmray.tasks.split_embedding import embed_split

CAPTIONS = ["a small red circle in the top left", "a big blue square", "a green triangle at the bottom"]


def _task(image_frozen: bool = True, text_frozen: bool = False) -> RetrievalTask:
    image_blocks, text_blocks = (0 if image_frozen else None), (0 if text_frozen else None)
    config = DualEncoderConfig(
        embed_dim=8,
        image=SmallCnnConfig(kind="small_cnn", width=4, blocks=2, image_size=32, trainable_blocks=image_blocks),
        text=SmallTransformerConfig(
            kind="small_transformer", width=16, layers=1, heads=2, max_length=12, trainable_blocks=text_blocks
        ),
    )
    return RetrievalTask(
        RetrievalTaskConfig.model_validate({"loss": {"kind": "infonce"}}), config, build_processor(config, CAPTIONS)
    )


def _split(task: RetrievalTask, images: int = 6) -> SplitTensors:
    generator = torch.Generator().manual_seed(0)
    tokens = task.processor.tokenize([CAPTIONS[i % 3] for i in range(images * 2)])
    return SplitTensors(
        image_ids=torch.arange(images),
        images=torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator),
        caption_ids=tokens.ids,
        caption_mask=tokens.mask,
        caption_image=torch.arange(images).repeat_interleave(2),
        caption_offsets=torch.arange(0, images * 2 + 1, 2),
        labels=torch.zeros(images, 0),
        object_count=torch.zeros(images),
        covered_fraction=torch.zeros(images),
        boxes=torch.zeros(images, 0, 4),
        box_count=torch.zeros(images, dtype=torch.long),
    )


def _context(task: RetrievalTask) -> EvalContext:
    return EvalContext(0, 1, torch.device("cpu"), 4, task.processor)


def test_the_key_changes_with_the_weights_the_tower_config_the_processor_and_the_inputs() -> None:
    task = _task()
    model = task.build_model()
    split = _split(task)
    tower, config = model.image_encoder, "small_cnn width 4"
    key = features_key(tower, config, "p1", [split.images])
    assert features_key(tower, config, "p1", [split.images.clone()]) == key
    assert features_key(tower, config + "!", "p1", [split.images]) != key
    assert features_key(tower, config, "p2", [split.images]) != key, "preprocessing (the processor) changed"
    assert features_key(tower, config, "p1", [split.images.flip(0)]) != key
    with torch.no_grad():
        next(tower.parameters()).add_(1e-3)
    assert features_key(tower, config, "p1", [split.images]) != key, "weights changed"


def test_features_are_computed_once_then_read_from_the_storage_root(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.arange(12, dtype=torch.float32).view(4, 3)

    first = cached_features(str(tmp_path), "k1", "train images", compute, rank=0)
    again = cached_features(str(tmp_path), "k1", "train images", compute, rank=0)
    assert torch.equal(first, again) and len(calls) == 1
    assert (tmp_path / CACHE_DIR / "k1.safetensors").is_file()
    cached_features(str(tmp_path), "k2", "train images", compute, rank=0)
    assert len(calls) == 2, "another key computes anew"
    cached_features(None, "k1", "train images", compute, rank=0)
    assert len(calls) == 3, "no cache root: computed, not kept"


@pytest.mark.parametrize("damage", [b"", b"these are not features", b"{}"])
def test_a_damaged_cache_file_is_computed_again_and_rewritten(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    kept = tmp_path / CACHE_DIR / "k1.safetensors"
    kept.parent.mkdir()
    kept.write_bytes(damage)
    features = torch.arange(12, dtype=torch.float32).view(4, 3)
    with caplog.at_level(logging.WARNING):
        found = cached_features(str(tmp_path), "k1", "train images", lambda: features, rank=0)
    assert torch.equal(found, features)
    assert str(kept) in caplog.text and "computing them again" in caplog.text
    assert torch.equal(cached_features(str(tmp_path), "k1", "train images", lambda: features * 0, rank=0), features)


def test_the_heads_train_and_evaluate_from_frozen_features_as_from_the_towers(tmp_path: Path) -> None:
    task = _task(image_frozen=True, text_frozen=True)
    torch.manual_seed(0)
    model = task.build_model()
    model.train()
    split = _split(task)
    prepared = task.with_frozen_features(model, {"train": split}, _context(task), str(tmp_path))["train"]
    assert set(task.batch_fields) == {IMAGE_FEATURES, TEXT_FEATURES}
    assert prepared.image_extras[IMAGE_FEATURES].shape[0] == 6 and prepared.caption_extras[TEXT_FEATURES].shape[0] == 12

    rows, captions = torch.tensor([0, 2, 4]), torch.tensor([1, 4, 9])
    from_towers = {"images": task.processor.normalize(split.images[rows]), "caption_ids": split.caption_ids[captions],
                   "caption_mask": split.caption_mask[captions].bool()}  # fmt: skip
    from_features = {IMAGE_FEATURES: prepared.image_extras[IMAGE_FEATURES][rows],
                     TEXT_FEATURES: prepared.caption_extras[TEXT_FEATURES][captions]}  # fmt: skip
    step = StepContext(step=0, autocast=contextlib.nullcontext)
    loss_towers = task.training_step(model, from_towers, "model", step).loss
    loss_features = task.training_step(model, from_features, "model", step).loss
    torch.testing.assert_close(loss_features, loss_towers)

    with_features = embed_split(model, prepared, _context(task))
    without = embed_split(model, split, _context(task))
    for a, b in zip(with_features, without, strict=True):
        torch.testing.assert_close(a, b)


def test_a_trained_tower_is_not_cached() -> None:
    task = _task(image_frozen=True, text_frozen=False)
    model = task.build_model().train()
    split = _split(task)
    prepared = task.with_frozen_features(model, {"train": split}, _context(task), None)["train"]
    assert IMAGE_FEATURES in prepared.image_extras and TEXT_FEATURES not in prepared.caption_extras
    assert task.batch_fields == (IMAGE_FEATURES, "caption_ids", "caption_mask")
