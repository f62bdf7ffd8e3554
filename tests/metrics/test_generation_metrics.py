"""BLEU-4 / CIDEr-D on hand-made cases, R-precision and sample diversity."""

from __future__ import annotations

import pytest
import torch

from mmray.metrics.captions import caption_scores, caption_tokens
from mmray.metrics.samples import r_precision, sample_diversity


def test_identical_captions_score_bleu_one() -> None:
    scores = caption_scores(["a small red circle on the left"], [["a small red circle on the left", "a red dot"]])
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)


def test_one_exact_caption_in_three_images_by_hand() -> None:
    # Every n-gram of the candidates matches only for image 1, so each modified n-gram precision is 1/3;
    # candidates (18 words) are longer than the closest references (12), so no brevity penalty:
    # BLEU-4 = (1/3 · 1/3 · 1/3 · 1/3)^(1/4) = 1/3. CIDEr-D: image 1's TF-IDF vectors equal its
    # reference's (cosine 1, no length gap: ×10), images 2 and 3 share no n-gram: (10 + 0 + 0) / 3.
    candidates = ["the cat sat on the mat"] * 3
    references = [["the cat sat on the mat"], ["a dog ran"], ["birds fly high"]]
    scores = caption_scores(candidates, references)
    assert scores["bleu4"] == pytest.approx(1 / 3, abs=1e-6)
    assert scores["cider_d"] == pytest.approx(10 / 3, abs=1e-6)


def test_captions_are_compared_without_case_or_punctuation() -> None:
    assert caption_tokens("On the LEFT, a red circle; two shapes!") == "on the left a red circle two shapes"
    plain = caption_scores(["a red circle at the top left"], [["a red circle at the top left"]])
    noisy = caption_scores(["A red circle, at the top-left."], [["a red circle at the top left"]])
    assert noisy == plain


def test_bad_caption_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 candidates but 1"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="without reference captions at positions \\[1\\]"):
        caption_scores(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="no captions"):
        caption_scores([], [])


def test_r_precision_is_one_for_matching_pairs_and_chance_for_unrelated_ones() -> None:
    matched = torch.nn.functional.normalize(torch.randn(300, 64), dim=-1)
    assert r_precision(matched, matched, candidates=100, seed=0) == 1.0
    generator = torch.Generator().manual_seed(0)
    unrelated = r_precision(
        torch.randn(2000, 32, generator=generator), torch.randn(2000, 32, generator=generator), 10, 0
    )
    assert 0.07 < unrelated < 0.13  # chance: 1 / 10
    same_caption = torch.ones(50, 8)
    assert r_precision(torch.randn(50, 8), same_caption, 10, 0) == 0.0  # a tie is not a hit
    with pytest.raises(ValueError, match="at least that many"):
        r_precision(matched[:5], matched[:5], 10, 0)


def test_r_precision_draws_are_seeded() -> None:
    images, texts = torch.randn(200, 16), torch.randn(200, 16)
    assert r_precision(images, texts, 20, seed=3) == r_precision(images, texts, 20, seed=3)


def test_sample_diversity() -> None:
    collapsed = torch.rand(4, 1, 3, 8, 8).expand(4, 5, 3, 8, 8)
    assert sample_diversity(collapsed) == 0.0
    pair = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 0.5)])[None]  # (1, 2, 3, 2, 2)
    assert sample_diversity(pair) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two samples"):
        sample_diversity(torch.rand(3, 1, 3, 4, 4))
