"""Pretrained CLIP / SigLIP pairs trained in one process: zero-shot figures first (`mmray evaluate
--zero-shot`, and epoch 0 of a run), fine-tuning with frozen blocks and layer-wise lr decay, WiSE-FT
ensembles (α = 0 is the zero-shot model exactly), SigLIP's sigmoid loss, and a fusion model around a pair,
warm-started from its retrieval bundle, served and evaluated from bundles alone."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmray.artifacts.model_bundle import open_bundle
from mmray.config import TrainJob, load_job
from mmray.models.registry import build_model
from mmray.serving.calls import EmbedCall, EmbedResult
from mmray.serving.model_service import ModelService
from mmray.tasks.evaluation import evaluate_bundle
from mmray.train.local_run import run_local
from tests.support.cli import invoke_mmray
from tests.support.tiny_pairs import write_tiny_clip, write_tiny_siglip

pytestmark = pytest.mark.slow

TRAIN = {"epochs": 1, "batch_size": 24, "lr": 0.002, "eval_batch_size": 64, "log_every_steps": 5}
METRICS = ("i2t_R@1", "t2i_R@5", "recall_mean", "zero_shot_top1", "zero_shot_mAP")


def _data(root: Path) -> dict[str, Any]:
    return {"source": "shapes", "root": str(root), "images": 160, "val_images": 40, "seed": 7}


def _clip_job(tmp_path: Path, tiny_shapes: Path) -> Path:
    job = {
        "kind": "train",
        "name": "clip-finetune",
        "storage_root": str(tmp_path / "runs"),
        "data": _data(tiny_shapes),
        "model": {
            "kind": "hf_dual_encoder",
            "pretrained": str(write_tiny_clip(tmp_path / "clip")),
            "image": {"trainable_blocks": 1},
            "text": {"trainable_blocks": 1, "max_length": 64},
        },
        "task": {"kind": "retrieval", "zero_shot": {"prompts": ["a photo of a {}.", "a {} shape"]}},
        "train": {**TRAIN, "tower_lr_scale": 0.5, "layer_lr_decay": 0.5},
    }
    path = tmp_path / "clip-finetune.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_clip_zero_shot_first_then_fine_tuned_and_ensembled(tiny_shapes: Path, tmp_path: Path) -> None:
    job = _clip_job(tmp_path, tiny_shapes)
    zero_shot = invoke_mmray("evaluate", str(job), "--zero-shot", "--device", "cpu")
    assert zero_shot.returncode == 0, zero_shot.stderr
    before = zero_shot.last_json()
    both = invoke_mmray("evaluate", str(job), "--zero-shot", "--checkpoint", str(tmp_path))
    assert both.returncode != 0 and "give a train job, no --checkpoint" in both.stderr
    assert before["images"] == 40 and 0.0 <= before["zero_shot_top1"] <= 1.0 and before["zero_shot_mAP"] > 0

    spec = load_job(job)
    assert isinstance(spec, TrainJob)
    outcome = run_local(spec)
    start, end = outcome.history[0], outcome.history[-1]
    assert start["epoch"] == 0 and "train_loss" not in start, "the starting model's figures, logged as epoch 0"
    for key in METRICS:
        assert start[key] == pytest.approx(before[key], abs=1e-6), key
    assert end["epoch"] == 1 and end["train_loss"] > 0 and "checkpoint_score" not in start

    state = torch.load(Path(outcome.model_bundle) / "train_state.pt", map_location="cpu", weights_only=True)
    rates = {round(group["initial_lr"] / TRAIN["lr"], 6) for group in state["optimizers"]["model"]["param_groups"]}
    assert {1.0, 0.5, 0.25} <= rates, "heads at lr; the last blocks' norms at lr × 0.5; their block × 0.5 again"

    ensemble = tmp_path / "wise-0"
    made = invoke_mmray("wise-ft", outcome.run_dir, str(ensemble), "--alpha", "0")
    assert made.returncode == 0, made.stderr
    assert made.last_json()["alpha"] == 0.0
    bundle = open_bundle(str(ensemble))
    pretrained = build_model(spec.model, bundle.processor).state_dict()
    tuned = open_bundle(outcome.model_bundle).model.state_dict()
    assert any(not torch.equal(pretrained[k], tuned[k]) for k in pretrained), "fine-tuning changed the weights"
    assert all(torch.equal(pretrained[k], v) for k, v in bundle.model.state_dict().items()), "α = 0: θ₀ exactly"
    again = evaluate_bundle(spec.data, str(ensemble), batch_size=64, device="cpu")
    for key in METRICS:
        assert again[key] == pytest.approx(before[key], abs=1e-6), key

    chosen = invoke_mmray(
        "wise-ft", outcome.run_dir, str(tmp_path / "wise"), "--alpha", "0,0.5,1", "--job", str(job), "--device", "cpu"
    )
    assert chosen.returncode == 0, chosen.stderr
    result = chosen.last_json()
    scores = {c["alpha"]: c["recall_mean"] for c in result["candidates"]}
    assert set(scores) == {0.0, 0.5, 1.0} and result["alpha"] == max(scores, key=lambda a: scores[a])
    assert scores[0.0] == pytest.approx(before["recall_mean"], abs=1e-6)
    assert scores[1.0] == pytest.approx(evaluate_bundle(spec.data, outcome.model_bundle, device="cpu")["recall_mean"])
    manifest = json.loads((tmp_path / "wise" / "bundle.json").read_text())
    assert manifest["wise_ft"]["alpha"] == result["alpha"]
    assert manifest["metrics"]["recall_mean"] == max(scores.values()), "the chosen α's figures"

    refused = invoke_mmray("wise-ft", outcome.run_dir, str(tmp_path / "bad"), "--alpha", "1.5")
    assert refused.returncode != 0 and "alpha must lie in [0, 1], got 1.5" in refused.stderr


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def test_siglip_sigmoid_loss_then_a_fusion_model_around_it(tiny_shapes: Path, tmp_path: Path) -> None:
    folder = write_tiny_siglip(tmp_path / "siglip")
    retrieval = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "siglip",
            "storage_root": str(tmp_path / "runs"),
            "data": _data(tiny_shapes),
            "model": {"kind": "hf_dual_encoder", "pretrained": str(folder)},
            "task": {"kind": "retrieval", "loss": {"kind": "sigmoid"}},
            "train": TRAIN,
        }
    )
    trained = run_local(retrieval)
    assert [h["epoch"] for h in trained.history] == [0, 1]
    assert trained.history[1]["logit_bias"] != pytest.approx(-4.0, abs=1e-6), "the sigmoid loss trains the bias"

    fusion = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "siglip-objects",
            "storage_root": str(tmp_path / "runs"),
            "data": _data(tiny_shapes),
            "model": {
                "kind": "fusion",
                "encoder": {"kind": "hf_dual_encoder", "pretrained": str(folder), "image": {"trainable_blocks": 0}},
                "fusion": {"kind": "attention", "width": 32, "heads": 2, "layers": 1},
            },
            "task": {
                "kind": "predict",
                "heads": {"objects": {"kind": "multilabel", "target": "labels"}},
                "contrastive": {"weight": 0.5, "loss": {"kind": "sigmoid"}},
            },
            "train": TRAIN,
            "init_from": trained.model_bundle,
        }
    )
    outcome = run_local(fusion)
    assert [h["epoch"] for h in outcome.history] == [1], "no epoch 0: the heads start untrained"
    assert {"train_loss_objects", "train_loss_contrastive", "objects_mAP"} <= set(outcome.metrics)

    shutil.rmtree(folder)
    evaluation = evaluate_bundle(fusion.data, outcome.model_bundle, batch_size=16, device="cpu")
    assert evaluation["objects_mAP"] == pytest.approx(outcome.metrics["objects_mAP"], abs=1e-5)

    service = ModelService(open_bundle(trained.model_bundle), device="cpu")
    texts = ["a red circle", "two shapes: a big blue square"]
    [answer] = service.embed_many([EmbedCall(texts=texts, images=[_png(1), _png(2)])])
    assert isinstance(answer, EmbedResult)
    bundle = open_bundle(trained.model_bundle)
    pixels = torch.stack([bundle.processor.pixels_from_bytes(_png(seed)) for seed in (1, 2)])
    batch = bundle.processor.tokenize(texts)
    with torch.no_grad():
        images = bundle.model.embed_images(bundle.processor.normalize(pixels))  # type: ignore[operator]
        words = bundle.model.embed_texts(batch.ids, batch.mask)  # type: ignore[operator]
    assert np.allclose(answer.image_vectors, images.numpy(), atol=1e-5)
    assert np.allclose(answer.text_vectors, words.numpy(), atol=1e-5)
