"""Fusion models trained end to end in one process (the loop Ray Train runs, without Ray): question heads
with per-caption targets, evaluation with its figures, and a multi-label task warm-started from a
retrieval run with the contrastive term kept alongside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mmray.artifacts.model_bundle import open_bundle
from mmray.config import TrainJob
from mmray.tasks.evaluation import evaluate_bundle
from mmray.train.local_run import run_local

pytestmark = [
    pytest.mark.slow,
    # a logged scalar read from a tensor that still carries its gradient (the gated fusion's alpha did)
    pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True to a scalar:UserWarning"),
]

ENCODER = {
    "embed_dim": 32,
    "image": {"kind": "small_cnn", "width": 8, "blocks": 4},
    "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 24},
}
TRAIN = {"epochs": 1, "batch_size": 32, "lr": 0.003, "num_workers": 2, "log_every_steps": 5, "eval_batch_size": 64}


def _data(root: Path, text: str = "captions") -> dict[str, Any]:
    return {"source": "shapes", "root": str(root), "images": 576, "val_images": 96, "seed": 1, "text": text}


def test_question_heads_train_evaluate_and_reload(data_root: Path, tmp_path: Path) -> None:
    spec = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "questions",
            "storage_root": str(tmp_path / "runs"),
            "data": _data(data_root, "questions"),
            "model": {
                "kind": "fusion",
                "encoder": ENCODER,
                "fusion": {"kind": "attention", "width": 32, "heads": 2, "layers": 1},
            },
            "task": {
                "kind": "predict",
                "heads": {
                    "present": {"kind": "multiclass", "target": "present", "classes": 2, "class_names": ["no", "yes"]},
                    "count": {"kind": "regression", "target": "count", "weight": 0.5},
                },
            },
            "train": TRAIN,
        }
    )
    outcome = run_local(spec)
    metrics = outcome.metrics
    assert metrics["present_examples"] == 96 * 2 and metrics["count_examples"] == 96 * 2
    assert 0.0 <= metrics["present_accuracy"] <= 1.0 and "count_r2" in metrics and "count_rmse" in metrics
    assert {"train_loss_present", "train_loss_count"} <= set(metrics)
    assert metrics["checkpoint_score"] == metrics["present_accuracy"], "the first head's accuracy ranks checkpoints"
    saved = (Path(outcome.run_dir) / "config.yaml").read_text()
    assert "class_names:" in saved and "outputs: 2" in saved, "config.yaml records the task bound to its data"

    evaluation = evaluate_bundle(spec.data, outcome.model_bundle, batch_size=50)
    assert evaluation["present_accuracy"] == pytest.approx(metrics["present_accuracy"])
    assert evaluation["count_r2"] == pytest.approx(metrics["count_r2"], abs=1e-5)
    figures = {Path(p).name for p in evaluation["figures"]}
    assert figures == {"present_confusion.png", "count_scatter.png"}
    assert all(Path(p).read_bytes().startswith(b"\x89PNG") for p in evaluation["figures"])
    assert Path(evaluation["figures"][0]).parent == Path(outcome.run_dir) / "evaluation" / "val"

    bundle = open_bundle(outcome.model_bundle)
    assert bundle.model_config.heads["present"].outputs == 2 and bundle.model_config.heads["count"].outputs == 1


def test_multilabel_head_from_a_retrieval_run_with_the_contrastive_term(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    retrieval = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "clip",
            "storage_root": str(runs),
            "data": _data(data_root),
            "model": {"kind": "dual_encoder", **ENCODER},
            "task": {"kind": "retrieval", "loss": {"kind": "infonce"}},
            "train": TRAIN,
        }
    )
    clip = run_local(retrieval)
    spec = TrainJob.model_validate(
        {
            "kind": "train",
            "name": "labels",
            "storage_root": str(runs),
            "init_from": "runs/clip",  # relative to the driver's directory, which Ray workers do not share
            "data": _data(data_root),
            "model": {"kind": "fusion", "encoder": ENCODER, "fusion": {"kind": "weighted_sum", "learn_alpha": True}},
            "task": {
                "kind": "predict",
                "heads": {"shapes": {"kind": "multilabel", "pos_weight": "balanced"}},
                "contrastive": {"weight": 0.5, "loss": {"kind": "infonce"}},
            },
            "train": {**TRAIN, "lr": 1e-5},
        }
    )
    outcome = run_local(spec)
    metrics = outcome.metrics
    assert {"shapes_mAP", "shapes_f1_macro", "shapes_f1_micro", "train_loss_contrastive", "alpha"} <= set(metrics)
    assert 0.0 <= metrics["alpha"] <= 1.0
    bundle = open_bundle(outcome.model_bundle)
    head = bundle.task_config.heads["shapes"]  # type: ignore[union-attr]
    assert head.class_names == ["circle", "square", "triangle", "diamond"] and len(head.pos_weight) == 4
    started = dict(open_bundle(clip.model_bundle).model.named_parameters())
    tuned = dict(bundle.model.encoder.named_parameters())
    drift = max(float((tuned[k].detach().float() - v.detach().float()).abs().max()) for k, v in started.items())
    assert drift < 1e-2, "the encoder started from the retrieval run's weights (and moved little at lr 1e-5)"
    evaluation = evaluate_bundle(spec.data, outcome.model_bundle)
    assert {Path(p).name for p in evaluation["figures"]} == {"shapes_f1_per_label.png"}
    assert torch.isfinite(torch.tensor(evaluation["shapes_mAP"]))
