from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from mmray.metrics.retrieval import image_to_text_ranks, retrieval_metrics, text_to_image_ranks


def _reference(images: torch.Tensor, texts: torch.Tensor, owner: list[int]) -> dict[str, float]:
    t2i = []
    for c, text in enumerate(texts):
        scores = [float(text @ image) for image in images]
        t2i.append(1 + sum(s > scores[owner[c]] for s in scores))
    i2t = []
    for i, image in enumerate(images):
        scores = [float(image @ text) for text in texts]
        order = sorted(range(len(texts)), key=lambda c: -scores[c])
        i2t.append(1 + next(pos for pos, c in enumerate(order) if owner[c] == i))
    result = {}
    for k in (1, 5, 10):
        result[f"i2t_R@{k}"] = sum(r <= k for r in i2t) / len(i2t)
        result[f"t2i_R@{k}"] = sum(r <= k for r in t2i) / len(t2i)
    result["i2t_medr"] = float(statistics.median_low(i2t))
    result["t2i_medr"] = float(statistics.median_low(t2i))
    return result


def test_recall_matches_brute_force_with_five_captions_per_image() -> None:
    generator = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(40, 16, generator=generator), dim=-1)
    owner = [i for i in range(40) for _ in range(5)]
    texts = F.normalize(images[owner] + 0.9 * torch.randn(200, 16, generator=generator), dim=-1)
    caption_image = torch.tensor(owner)
    metrics = retrieval_metrics(images, texts, caption_image)
    expected = _reference(images, texts, owner)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert 0.0 < metrics["t2i_R@1"] < 1.0 and 0.0 < metrics["i2t_R@1"] < 1.0


def test_chunking_does_not_change_ranks() -> None:
    generator = torch.Generator().manual_seed(2)
    images = F.normalize(torch.randn(30, 8, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(90, 8, generator=generator), dim=-1)
    owner = torch.arange(30).repeat_interleave(3)
    assert torch.equal(
        text_to_image_ranks(texts, images, owner, chunk_size=7),
        text_to_image_ranks(texts, images, owner, 1000),
    )
    assert torch.equal(
        image_to_text_ranks(images, texts, owner, chunk_size=4),
        image_to_text_ranks(images, texts, owner, 1000),
    )


def test_perfect_embeddings_have_recall_one() -> None:
    images = torch.eye(6)
    texts = images.repeat_interleave(2, dim=0)
    metrics = retrieval_metrics(images, texts, torch.arange(6).repeat_interleave(2))
    assert metrics["i2t_R@1"] == metrics["t2i_R@1"] == 1.0
    assert metrics["i2t_medr"] == metrics["t2i_medr"] == 1.0


def test_tied_scores_count_against_the_query() -> None:
    collapsed_images, collapsed_texts = torch.ones(20, 4), torch.ones(40, 4)  # every score equal
    owner = torch.arange(20).repeat_interleave(2)
    metrics = retrieval_metrics(collapsed_images, collapsed_texts, owner)
    assert metrics["recall_mean"] == 0.0, "a model that says the same for everything finds nothing"
    assert metrics["t2i_medr"] == 20 and metrics["i2t_medr"] == 39, "ranked behind every tie but its own"


def test_non_finite_embeddings_rank_last() -> None:
    images = F.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    owner = torch.arange(20)
    nan_metrics = retrieval_metrics(torch.full_like(images, float("nan")), torch.full_like(images, float("nan")), owner)
    assert nan_metrics["recall_mean"] == 0.0 and nan_metrics["t2i_medr"] == 20 and nan_metrics["i2t_medr"] == 20
    texts = images.clone()
    texts[0] = float("nan")  # one diverged caption: ranked last itself, never ahead of another's
    ranks = text_to_image_ranks(texts, images, owner)
    assert ranks[0] == 20 and bool((ranks[1:] == 1).all())
    ranks = image_to_text_ranks(images, texts, owner)
    assert ranks[0] == 20 and bool((ranks[1:] == 1).all())
