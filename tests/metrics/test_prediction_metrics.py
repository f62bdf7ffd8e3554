"""Prediction metrics against brute-force references on small inputs."""

from __future__ import annotations

import pytest
import torch

from mmray.metrics.prediction import confusion_matrix, multiclass_metrics, multilabel_metrics, regression_metrics


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def test_multiclass_metrics_match_counting() -> None:
    torch.manual_seed(0)
    logits = torch.randn(40, 4)
    target = torch.randint(0, 3, (40,))  # class 3 never occurs in the targets
    predicted = logits.argmax(-1)
    accuracy = float((predicted == target).float().mean())
    per_class = []
    for c in range(4):
        tp = int(((predicted == c) & (target == c)).sum())
        fp = int(((predicted == c) & (target != c)).sum())
        fn = int(((predicted != c) & (target == c)).sum())
        if tp + fp + fn:
            per_class.append(_f1(tp, fp, fn))
    metrics = multiclass_metrics(logits, target.float(), classes=4)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["f1_micro"] == pytest.approx(accuracy), "micro F1 equals accuracy for single-label"
    assert metrics["f1_macro"] == pytest.approx(sum(per_class) / len(per_class), rel=1e-5)
    matrix = confusion_matrix(logits, target, 4)
    assert all(int(matrix[t, p]) == int(((target == t) & (predicted == p)).sum()) for t in range(4) for p in range(4))


def _average_precision(scores: list[float], positives: list[int]) -> float:
    """Mean of the precision at the rank of each positive (no ties in the scores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if positives[index]:
            hits += 1
            total += hits / rank
    return total / max(1, sum(positives))


def test_multilabel_metrics_match_counting() -> None:
    torch.manual_seed(1)
    logits = torch.randn(30, 5)
    target = (torch.rand(30, 5) < 0.3).float()
    target[:, 4] = 0  # a label with no positive example is left out of the macro averages
    probabilities = torch.sigmoid(logits)
    predicted = probabilities > 0.5
    aps, f1s, tp_all, fp_all, fn_all = [], [], 0, 0, 0
    for k in range(5):
        t = target[:, k].bool()
        tp, fp, fn = (
            int((predicted[:, k] & t).sum()),
            int((predicted[:, k] & ~t).sum()),
            int((~predicted[:, k] & t).sum()),
        )
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        if t.any():
            aps.append(_average_precision(probabilities[:, k].tolist(), t.int().tolist()))
            f1s.append(_f1(tp, fp, fn))
    metrics = multilabel_metrics(logits, target, threshold=0.5)
    assert metrics["mAP"] == pytest.approx(sum(aps) / len(aps), rel=1e-5)
    assert metrics["f1_macro"] == pytest.approx(sum(f1s) / len(f1s), rel=1e-5)
    assert metrics["f1_micro"] == pytest.approx(_f1(tp_all, fp_all, fn_all), rel=1e-5)
    assert metrics["labels_present"] == 4


def test_regression_metrics_by_hand() -> None:
    values, target = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 2.0])
    mean = 2.0
    residual = 0 + 1 + 4
    total = (1 - mean) ** 2 + (3 - mean) ** 2 + (2 - mean) ** 2
    metrics = regression_metrics(values, target)
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["rmse"] == pytest.approx((residual / 3) ** 0.5)
    assert metrics["r2"] == pytest.approx(1 - residual / total)
