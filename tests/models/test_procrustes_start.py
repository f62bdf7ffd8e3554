"""`model.init_projections: procrustes`: linear heads set to orthogonal Procrustes on PCA of the training
split's frozen features reproduce that closed-form baseline's retrieval, through the library function
and through the retrieval task on a real (random-tower) model, on the features as they are or L2-normalised
(`model.normalize_features`); the option refuses where it cannot apply."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mmray.config.jobs import TrainJob, validate_job
from mmray.data.sources import load_split
from mmray.data.tensors import split_to_tensors
from mmray.errors import ConfigError
from mmray.metrics.retrieval import retrieval_metrics
from mmray.models.dual_encoder import DualEncoder, projection_head
from mmray.models.procrustes import start_from_procrustes
from mmray.models.registry import build_processor
from mmray.tasks.base import EvalContext
from mmray.tasks.retrieval import RetrievalTask


def _features(generator: torch.Generator, images: int, captions_each: int) -> tuple[torch.Tensor, ...]:
    """Images (N, 24) and captions (N·c, 16) that share a 6-d latent per image, with noise."""
    latent = torch.randn(images, 6, generator=generator)  # (N, 6)
    to_image, to_text = torch.randn(6, 24, generator=generator), torch.randn(6, 16, generator=generator)
    caption_image = torch.arange(images).repeat_interleave(captions_each)  # (C,)
    image_features = latent @ to_image + 0.3 * torch.randn(images, 24, generator=generator)  # (N, 24)
    text_features = latent[caption_image] @ to_text + 0.6 * torch.randn(len(caption_image), 16, generator=generator)
    return image_features + 2.0, text_features - 1.0, caption_image


def _reference(images: np.ndarray, texts: np.ndarray, caption_image: np.ndarray, k: int) -> Any:
    """The baseline written out independently: PCA by eigen-decomposition of each covariance, then the
    orthogonal R minimising ‖a R − b‖ over every (image, caption) pair. -> similarity function"""

    def pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = x - x.mean(0)
        values, vectors = np.linalg.eigh(centred.T @ centred)
        return x.mean(0), vectors[:, np.argsort(values)[::-1][:k]]

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    (mi, pi), (mt, pt) = pca(images), pca(texts)
    a, b = unit((images[caption_image] - mi) @ pi), unit((texts - mt) @ pt)
    u, _, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt
    return lambda x, t: unit((x - mi) @ pi @ rotation) @ unit((t - mt) @ pt).T


def _dual(image_dim: int, text_dim: int, embed_dim: int, kind: str = "linear") -> DualEncoder:
    image_head, text_head = projection_head(image_dim, embed_dim, kind), projection_head(text_dim, embed_dim, kind)
    return DualEncoder(nn.Identity(), nn.Identity(), image_head, text_head)


@pytest.mark.parametrize(("train_images", "embed_dim", "aligned"), [(30, 8, 8), (6, 8, 5)])
def test_started_heads_reproduce_the_procrustes_baseline(train_images: int, embed_dim: int, aligned: int) -> None:
    generator = torch.Generator().manual_seed(train_images)
    images, texts, caption_image = _features(generator, train_images, 4)
    model = _dual(24, 16, embed_dim)
    assert start_from_procrustes(model, images, texts, caption_image) == aligned
    reference = _reference(images.double().numpy(), texts.double().numpy(), caption_image.numpy(), aligned)

    held_images, held_texts, held_owner = _features(torch.Generator().manual_seed(99), 20, 3)
    with torch.no_grad():
        ours = model.project_image(held_images) @ model.project_text(held_texts).T  # (20, 60)
    expected = torch.from_numpy(reference(held_images.double().numpy(), held_texts.double().numpy()))
    torch.testing.assert_close(ours.double(), expected, atol=1e-4, rtol=0)
    with torch.no_grad():
        metrics = retrieval_metrics(model.project_image(held_images), model.project_text(held_texts), held_owner)
    ranks = expected.argsort(dim=1, descending=True)  # (20, 60): captions by score, per image
    r1 = float((held_owner[ranks[:, 0]] == torch.arange(20)).float().mean())
    assert metrics["i2t_R@1"] == pytest.approx(r1)
    if aligned < embed_dim:
        assert model.image_projection.weight[aligned:].abs().max() == 0, "dimensions past the rank start at zero"


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def test_normalised_features_start_at_the_baseline_of_unit_features_and_ignore_scale() -> None:
    images, texts, caption_image = _features(torch.Generator().manual_seed(3), 30, 4)
    model = DualEncoder(nn.Identity(), nn.Identity(), nn.Linear(24, 8), nn.Linear(16, 8), normalize_features=True)
    start_from_procrustes(model, images, texts, caption_image)
    reference = _reference(_unit(images).double().numpy(), _unit(texts).double().numpy(), caption_image.numpy(), 8)

    held_images, held_texts, _ = _features(torch.Generator().manual_seed(98), 20, 3)
    scale = 0.2 + 5 * torch.rand(20, 1, generator=torch.Generator().manual_seed(1))  # (20, 1)
    with torch.no_grad():
        ours = model.project_image(held_images * scale) @ model.project_text(held_texts).T  # (20, 60)
        plain = DualEncoder(nn.Identity(), nn.Identity(), model.image_projection, model.text_projection)
        unnormalised = plain.project_image(held_images * scale) @ plain.project_text(held_texts).T  # (20, 60)
    expected = torch.from_numpy(reference(_unit(held_images).double().numpy(), _unit(held_texts).double().numpy()))
    torch.testing.assert_close(ours.double(), expected, atol=1e-4, rtol=0)
    miss = (unnormalised.double() - expected).abs().max()
    assert miss > 1e-2, "the same heads without normalize_features: each row's norm moves its similarities"


def test_heads_that_are_not_linear_are_refused() -> None:
    images, texts, caption_image = _features(torch.Generator().manual_seed(0), 10, 2)
    with pytest.raises(ConfigError, match=r"needs linear projection heads .* the image head is a Sequential"):
        start_from_procrustes(_dual(24, 16, 8, "mlp"), images, texts, caption_image)


def _job(tmp_path: Path, model: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "kind": "train",
        "name": "procrustes",
        "storage_root": str(tmp_path / "runs"),
        "data": {"source": "shapes", "root": str(tmp_path / "shapes"), "images": 48, "val_images": 16, "seed": 1},
        "model": {
            "kind": "dual_encoder",
            "embed_dim": 16,
            "init_projections": "procrustes",
            "image": {"kind": "small_cnn", "width": 4, "blocks": 2, "image_size": 32, "trainable_blocks": 0},
            "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "trainable_blocks": 0},
            **model,
        },
        "task": {"kind": "retrieval", "loss": {"kind": "infonce"}},
        **top,
    }


@pytest.mark.parametrize("normalize", [False, True])
def test_the_retrieval_task_starts_a_random_tower_model_at_the_baseline(tmp_path: Path, normalize: bool) -> None:
    spec = validate_job(_job(tmp_path, {"normalize_features": normalize}), "test")
    assert isinstance(spec, TrainJob)
    train = load_split(spec.data, "train")
    processor = build_processor(spec.model, [caption for record in train.records for caption in record.captions])
    task = RetrievalTask(spec.task, spec.model, processor)
    torch.manual_seed(0)
    model = task.build_model().eval()
    split = split_to_tensors(train, processor)
    context = EvalContext(0, 1, torch.device("cpu"), 16, processor)
    said = task.start_weights(model, split, context)
    assert said is not None and "orthogonal Procrustes" in said and "(8 of 16 dims)" in said  # the CNN pools 8 features

    with torch.no_grad():
        image_features = model.encode_image_features(processor.normalize(split.images)).pooled  # (N, D_img)
        text_features = model.encode_text_features(split.caption_ids, split.caption_mask.bool()).pooled  # (C, D_txt)
        assert model.normalize_features is normalize
        if normalize:  # the baseline of the features as the heads read them
            image_features, text_features = _unit(image_features), _unit(text_features)
        reference = _reference(image_features.double().numpy(), text_features.double().numpy(),
                               split.caption_image.numpy(), 8)  # fmt: skip
        expected = torch.from_numpy(reference(image_features.double().numpy(), text_features.double().numpy()))
        ours = model.project_image(image_features) @ model.project_text(text_features).T  # (N, C)
    torch.testing.assert_close(ours.double(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("model", "top", "message"),
    [
        ({"projection": "mlp"}, {}, "init_projections=procrustes needs projection: linear, got 'mlp'"),
        ({"image": {"kind": "small_cnn", "trainable_blocks": 1}}, {}, "got image.trainable_blocks=1"),
        ({}, {"init_from": "runs/other"}, "computes the heads' start; drop it or init_from"),
    ],
)  # fmt: skip
def test_the_option_refuses_where_it_cannot_apply(
    tmp_path: Path, model: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_job(_job(tmp_path, model, **top), "test")


def test_the_option_is_refused_on_models_without_such_heads(tmp_path: Path) -> None:
    pair = _job(tmp_path, {})
    pair["model"] = {
        "kind": "hf_dual_encoder",
        "architecture": {"model_type": "clip"},
        "init_projections": "procrustes",
    }
    with pytest.raises(ConfigError, match="init_projections"):
        validate_job(pair, "test")
    encoder = _job(tmp_path, {})["model"]
    fusion = _job(tmp_path, {})
    fusion["model"] = {"kind": "fusion", "encoder": encoder, "fusion": {"kind": "weighted_sum"}}
    fusion["task"] = {"kind": "predict", "heads": {"objects": {"kind": "multilabel"}}}
    with pytest.raises(ConfigError, match=r"leave model\.encoder\.init_projections at random"):
        validate_job(fusion, "test")
