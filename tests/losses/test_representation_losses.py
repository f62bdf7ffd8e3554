from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmray.config.training import ContrastiveLossConfig, InfoNceLossConfig, TripletLossConfig
from mmray.losses.representation import (
    RepresentationLoss,
    contrastive_batch_loss,
    contrastive_pair_loss,
    info_nce_loss,
    triplet_loss,
)
from mmray.models.outputs import DualEncoderOutput


def test_contrastive_loss_matches_hand_computed_values() -> None:
    first = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    second = torch.tensor([[3.0, 4.0], [0.5, 0.0], [1.0, 3.0]])
    is_match = torch.tensor([True, False, False])
    # d = 5, 0.5, 2 -> 0.5·25 = 12.5 (match); 0.5·(1 − 0.5)² = 0.125; max(0, 1 − 2) = 0
    loss = contrastive_pair_loss(first, second, is_match, margin=1.0)
    assert loss.item() == pytest.approx((12.5 + 0.125 + 0.0) / 3)


def test_contrastive_label_meaning_cannot_flip() -> None:
    near = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.1, 0.0]])
    assert contrastive_pair_loss(*near, torch.tensor([True]), margin=1.0).item() == pytest.approx(0.005)
    assert contrastive_pair_loss(*near, torch.tensor([False]), margin=1.0).item() == pytest.approx(0.405)


def _unit(*rows: tuple[float, float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows), dim=-1)


def test_triplet_hardest_and_semi_hard_on_hand_computed_scores() -> None:
    image = torch.eye(3)
    text = torch.tensor([[0.9, 0.3, 0.2], [0.8, 0.5, 0.0], [0.0, 0.1, 0.7]])
    # scores = text.T; row i: positive scores[i, i]
    scores = image @ text.T
    margin = 0.2
    hardest_i2t = [
        max(0.0, margin - scores[i, i].item() + max(scores[i, j].item() for j in range(3) if j != i)) for i in range(3)
    ]
    hardest_t2i = [
        max(0.0, margin - scores[i, i].item() + max(scores[j, i].item() for j in range(3) if j != i)) for i in range(3)
    ]
    expected = (sum(hardest_i2t) / 3 + sum(hardest_t2i) / 3) / 2
    assert triplet_loss(image, text, margin, "hardest").item() == pytest.approx(expected)

    def semi(values: list[float], positive: float) -> float:
        easier = [v for v in values if v < positive]
        return max(easier) if easier else max(values)

    semi_i2t = [
        max(
            0.0,
            margin - scores[i, i].item() + semi([scores[i, j].item() for j in range(3) if j != i], scores[i, i].item()),
        )
        for i in range(3)
    ]
    semi_t2i = [
        max(
            0.0,
            margin - scores[i, i].item() + semi([scores[j, i].item() for j in range(3) if j != i], scores[i, i].item()),
        )
        for i in range(3)
    ]
    expected_semi = (sum(semi_i2t) / 3 + sum(semi_t2i) / 3) / 2
    assert triplet_loss(image, text, margin, "semi_hard").item() == pytest.approx(expected_semi)
    assert expected_semi != pytest.approx(expected)


def test_info_nce_matches_the_formula() -> None:
    image = _unit((1.0, 0.0), (0.0, 1.0))
    text = _unit((1.0, 1.0), (0.0, 1.0))
    scale = torch.tensor(10.0)
    s = 10.0 * (image @ text.T)
    i2t = [-(s[i, i] - torch.logsumexp(s[i], 0)).item() for i in range(2)]
    t2i = [-(s[i, i] - torch.logsumexp(s[:, i], 0)).item() for i in range(2)]
    expected = (sum(i2t) / 2 + sum(t2i) / 2) / 2
    assert info_nce_loss(image, text, scale).item() == pytest.approx(expected)
    c = math.cos(math.pi / 4)
    assert s[0, 0].item() == pytest.approx(10 * c)


@pytest.mark.parametrize(
    "config",
    [
        InfoNceLossConfig(kind="infonce"),
        TripletLossConfig(kind="triplet", mining="semi_hard"),
        ContrastiveLossConfig(kind="contrastive", negatives="sampled", negatives_per_positive=2),
        ContrastiveLossConfig(kind="contrastive"),
        ContrastiveLossConfig(kind="contrastive", negatives="hardest"),
    ],
)
def test_matched_pairs_score_lower_than_shuffled(config: object) -> None:
    torch.manual_seed(0)
    image = F.normalize(torch.randn(16, 8), dim=-1)
    noise = 0.05 * torch.randn(16, 8)
    matched = DualEncoderOutput(image, F.normalize(image + noise, dim=-1), torch.tensor(20.0))
    shuffled = DualEncoderOutput(image, matched.text_embeddings[torch.randperm(16)], torch.tensor(20.0))
    loss = RepresentationLoss(config)  # type: ignore[arg-type]
    assert loss(matched).loss.item() < loss(shuffled).loss.item()


@pytest.mark.parametrize(
    ("negatives", "expected"),
    [("all", 0.5625), ("active", 0.78125), ("weighted", 0.833275), ("hardest", 0.833333), ("semi_hard", 0.5625)],
)
def test_contrastive_batch_options_match_hand_computed_values(negatives: str, expected: float) -> None:
    """1-D points: images 0, 1, 3 and captions 0.5, 1, 2 (matches on the diagonal), margin 2.

    Matching terms 0.5·d² = 0.125, 0, 0.5 (mean 0.2083). Non-matching hinges 0.5·max(0, 2 − d)², per
    image row (t1: 0.5 | t0: 1.125, t2: 0.5 | none) and per caption row (i1: 1.125 | i0: 0.5 | i1: 0.5):
    all divides each row's sum by its 2 negatives, active by the negatives inside the margin, hardest
    takes the closest negative, semi_hard the closest one farther than the row's match, weighted
    weighs them by softmax(−d²/0.1): image 1's row (d² 0.25 and 1) gives 0.999447·1.125 + 0.000553·0.5,
    the other rows' weights are within 1e-13 of the hardest's."""
    image = torch.tensor([[0.0], [1.0], [3.0]])
    text = torch.tensor([[0.5], [1.0], [2.0]])
    loss = contrastive_batch_loss(image, text, margin=2.0, negatives=negatives)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_contrastive_batch_loss_keeps_the_pair_formula() -> None:
    """With one negative per anchor, `all` is exactly the pair loss of the matches plus the mismatches."""
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(2, 8), dim=-1), F.normalize(torch.randn(2, 8), dim=-1)
    batch = contrastive_batch_loss(image, text, margin=1.5, negatives="all")
    positives = contrastive_pair_loss(image, text, torch.tensor([True, True]), 1.5)
    mismatched = contrastive_pair_loss(image, text.flip(0), torch.tensor([False, False]), 1.5)
    assert batch.item() == pytest.approx(positives.item() + mismatched.item(), abs=1e-6)
