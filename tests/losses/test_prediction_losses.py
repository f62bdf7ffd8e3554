"""Head losses against values computed by hand, and NaN targets left out."""

from __future__ import annotations

import math

import pytest
import torch

from mmray.config.prediction import MulticlassHeadConfig, MultilabelHeadConfig, RegressionHeadConfig
from mmray.losses.prediction import head_loss

MULTICLASS = MulticlassHeadConfig(kind="multiclass", target="present", classes=2)


def test_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0.0, 0.0])
    first = -math.log(math.exp(2) / (math.exp(2) + 1))
    second = -math.log(1 / (1 + math.e))
    assert float(head_loss(MULTICLASS, logits, target)) == pytest.approx((first + second) / 2, rel=1e-6)


def test_label_smoothing_by_hand() -> None:
    config = MULTICLASS.model_copy(update={"label_smoothing": 0.2})
    logits = torch.tensor([[1.0, 0.0]])
    log_p = [1 - math.log(math.e + 1), -math.log(math.e + 1)]
    expected = -(0.9 * log_p[0] + 0.1 * log_p[1])
    assert float(head_loss(config, logits, torch.tensor([0.0]))) == pytest.approx(expected, rel=1e-6)


def test_bce_with_positive_weights_by_hand() -> None:
    config = MultilabelHeadConfig(kind="multilabel", classes=2, pos_weight=[3.0, 1.0])
    logits = torch.tensor([[0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0]])
    sigmoid2 = 1 / (1 + math.exp(-2))
    expected = (3.0 * -math.log(0.5) + -math.log(1 - sigmoid2)) / 2
    assert float(head_loss(config, logits, target)) == pytest.approx(expected, rel=1e-6)


def test_mse_and_smooth_l1_by_hand() -> None:
    values, target = torch.tensor([[1.0], [4.0]]), torch.tensor([0.5, 1.0])
    mse = RegressionHeadConfig(kind="regression", target="count")
    assert float(head_loss(mse, values, target)) == pytest.approx((0.25 + 9.0) / 2)
    smooth = RegressionHeadConfig(kind="regression", target="count", loss="smooth_l1", beta=1.0)
    assert float(head_loss(smooth, values, target)) == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)


def test_rows_without_a_target_are_left_out() -> None:
    mse = RegressionHeadConfig(kind="regression", target="count")
    values = torch.tensor([[1.0], [100.0]], requires_grad=True)
    loss = head_loss(mse, values, torch.tensor([0.0, float("nan")]))
    assert float(loss.detach()) == pytest.approx(1.0)
    none_known = head_loss(mse, values, torch.tensor([float("nan"), float("nan")]))
    assert float(none_known.detach()) == 0.0
    none_known.backward()
    assert values.grad is not None and float(values.grad.abs().sum()) == 0.0, "still on the graph for DDP"
