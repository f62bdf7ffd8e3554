"""Warm starts keep the bundle's processor: its vocabulary, whatever captions the new data has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmray.artifacts.model_bundle import read_bundle, write_bundle
from mmray.config import TrainJob
from mmray.config.model import DualEncoderConfig
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import ConfigError
from mmray.models.registry import build_model, build_processor
from mmray.train.driver import run_processor
from mmray.train.local_run import run_local

pytestmark = pytest.mark.slow
SHAPES_CAPTIONS = ["a small red circle in the top left", "a big blue square at the bottom"]
MODEL = {
    "kind": "dual_encoder",
    "embed_dim": 16,
    "image": {"kind": "small_cnn", "width": 4, "blocks": 3, "image_size": 32},
    "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "max_length": 24},
}


def _coco_job(coco_mini: Path, runs: Path, bundle: Path, **model: object) -> TrainJob:
    split = {
        "captions": str(coco_mini / "annotations" / "captions_train2017.json"),
        "images": str(coco_mini / "images"),
    }
    return TrainJob.model_validate(
        {
            "kind": "train",
            "name": "warm",
            "storage_root": str(runs),
            "data": {"source": "coco", "train": split},
            "model": {**MODEL, **model},
            "task": {"kind": "retrieval"},
            "train": {"epochs": 1, "batch_size": 16, "lr": 1e-12, "num_workers": 2, "warmup_fraction": 0.0},
            "init_from": str(bundle),
        }
    )


def test_warm_start_on_other_captions_keeps_the_bundles_vocabulary_and_adds_new_words(
    coco_mini: Path, tmp_path: Path
) -> None:
    config = DualEncoderConfig.model_validate(MODEL)
    processor = build_processor(config, SHAPES_CAPTIONS)
    write_bundle(tmp_path / "start", build_model(config, processor), config, processor)
    assert isinstance(processor.tokenizer, WordTokenizer) and processor.tokenizer.vocab_size < 20
    known = processor.tokenizer.vocabulary

    job = _coco_job(coco_mini, tmp_path / "runs", tmp_path / "start")
    grown = run_processor(job, ["an entirely different caption set"]).tokenizer
    assert isinstance(grown, WordTokenizer) and grown.vocabulary[: len(known)] == known, "existing ids unchanged"
    assert grown.vocabulary[len(known) :] == ["an", "caption", "different", "entirely", "set"]
    outcome = run_local(job)
    warmed = read_bundle(Path(outcome.model_bundle)).processor.tokenizer
    assert isinstance(warmed, WordTokenizer) and warmed.vocabulary[: len(known)] == known
    before = load_file(tmp_path / "start" / "model.safetensors")
    after = load_file(Path(outcome.model_bundle) / "model.safetensors")
    weights = [name for name in before if name.endswith("weight") and "running" not in name]
    rows = {n: before[n].shape[0] for n in weights if n.endswith("embed.weight")}
    assert rows and all(after[n].shape[0] > count for n, count in rows.items()), "coco words were added"
    assert all(torch.allclose(before[n], after[n][: rows[n]] if n in rows else after[n], atol=1e-6) for n in weights), (
        "started from the bundle"
    )


def test_warm_start_refuses_other_preprocessing(coco_mini: Path, tmp_path: Path) -> None:
    config = DualEncoderConfig.model_validate(MODEL)
    processor = build_processor(config, SHAPES_CAPTIONS)
    write_bundle(tmp_path / "start", build_model(config, processor), config, processor)
    image = {**MODEL["image"], "image_size": 64}  # type: ignore[dict-item]
    job = _coco_job(coco_mini, tmp_path / "runs", tmp_path / "start", image=image)
    with pytest.raises(ConfigError, match="warm starts keep the bundle's preprocessing"):
        run_processor(job, SHAPES_CAPTIONS)
