"""Prediction metrics against brute-force references on small inputs."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import multilabel_average_precision, multilabel_f1_score

from mmray.metrics.prediction import (
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    multilabel_per_label_f1,
    regression_metrics,
)
from mmray.tasks.zero_shot import zero_shot_metrics


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


def _label_counts(logits: torch.Tensor, target: torch.Tensor, k: int) -> tuple[int, int, int]:
    """(tp, fp, fn) of label k at probability threshold 0.5. logits, target: (N, K)"""
    predicted, t = torch.sigmoid(logits[:, k]) > 0.5, target[:, k].bool()
    return int((predicted & t).sum()), int((predicted & ~t).sum()), int((~predicted & t).sum())


def test_multilabel_metrics_one_label() -> None:
    """A single label (a one-category dataset) scores as that label does among several."""
    torch.manual_seed(2)
    logits = torch.randn(20, 1)
    target = (torch.rand(20, 1) < 0.4).float()
    target[0, 0] = 1
    metrics = multilabel_metrics(logits, target, threshold=0.5)
    f1 = _f1(*_label_counts(logits, target, 0))
    ap = _average_precision(torch.sigmoid(logits[:, 0]).tolist(), target[:, 0].int().tolist())
    assert metrics["mAP"] == pytest.approx(ap, rel=1e-5)
    assert metrics["f1_macro"] == pytest.approx(f1, rel=1e-5)
    assert metrics["f1_micro"] == pytest.approx(f1, rel=1e-5)
    assert metrics["labels_present"] == 1
    # equal to the multi-label functions' value for the same column next to another label
    wider_logits = torch.cat([logits, torch.randn(20, 1)], dim=1)  # (N, 2)
    wider_target = torch.cat([target, torch.ones(20, 1)], dim=1)  # (N, 2)
    probabilities = torch.sigmoid(wider_logits)
    ap_none = multilabel_average_precision(probabilities, wider_target.long(), num_labels=2, average="none")
    f1_none = multilabel_f1_score(probabilities, wider_target.long(), num_labels=2, average="none")
    assert metrics["mAP"] == pytest.approx(float(ap_none[0]), rel=1e-6)
    assert metrics["f1_macro"] == pytest.approx(float(f1_none[0]), rel=1e-6)
    per_label = multilabel_per_label_f1(logits, target, threshold=0.5)
    assert per_label.shape == (1,)
    assert float(per_label[0]) == pytest.approx(float(f1_none[0]), rel=1e-6)


def test_multilabel_metrics_one_label_present_of_several() -> None:
    """Only one of five labels occurs in the split: mAP and macro F1 are that label's."""
    torch.manual_seed(3)
    logits = torch.randn(25, 5)
    target = torch.zeros(25, 5)
    target[::3, 2] = 1
    metrics = multilabel_metrics(logits, target, threshold=0.5)
    ap = _average_precision(torch.sigmoid(logits[:, 2]).tolist(), target[:, 2].int().tolist())
    counts = [_label_counts(logits, target, k) for k in range(5)]
    assert metrics["mAP"] == pytest.approx(ap, rel=1e-5)
    assert metrics["f1_macro"] == pytest.approx(_f1(*counts[2]), rel=1e-5)
    assert metrics["f1_micro"] == pytest.approx(_f1(*(sum(c[i] for c in counts) for i in range(3))), rel=1e-5)
    assert metrics["labels_present"] == 1


@pytest.mark.parametrize("labels", [1, 4, 0])
def test_multilabel_metrics_no_label_present(labels: int) -> None:
    """No positive example (or no label at all): NaN scores, zero labels present, no error."""
    logits, target = torch.randn(6, labels), torch.zeros(6, labels)
    metrics = multilabel_metrics(logits, target, threshold=0.5)
    assert all(metrics[key] != metrics[key] for key in ("mAP", "f1_macro", "f1_micro"))
    assert metrics["labels_present"] == 0
    assert multilabel_per_label_f1(logits, target, threshold=0.5).shape == (labels,)


def test_multilabel_metrics_unchanged_for_several_labels() -> None:
    """With two or more labels present the values are exactly torchmetrics' multi-label ones."""
    torch.manual_seed(4)
    logits = torch.randn(40, 6)
    target = (torch.rand(40, 6) < 0.3).float()
    target[:, 1] = 0
    target[:, 0] = 0
    target[5, 0] = 1  # label 0 has a single positive, label 1 none
    probabilities = torch.sigmoid(logits)
    occurring = target.sum(dim=0) > 0
    present = int(occurring.sum())
    ap = multilabel_average_precision(
        probabilities[:, occurring], target[:, occurring].long(), num_labels=present, average="none"
    )
    per_label = multilabel_f1_score(probabilities, target.long(), num_labels=6, threshold=0.5, average="none")
    micro = multilabel_f1_score(probabilities, target.long(), num_labels=6, threshold=0.5, average="micro")
    metrics = multilabel_metrics(logits, target, threshold=0.5)
    assert metrics == {
        "mAP": float(ap.mean()),
        "f1_macro": float(per_label[occurring].mean()),
        "f1_micro": float(micro),
        "labels_present": float(present),
    }
    assert torch.equal(multilabel_per_label_f1(logits, target, threshold=0.5), per_label)


def test_zero_shot_metrics_one_class() -> None:
    """Zero-shot evaluation on a one-category dataset: every labelled image is a top-1 hit."""
    torch.manual_seed(5)
    images, classes = torch.randn(8, 4), torch.randn(1, 4)
    labels = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0], [1.0], [0.0], [1.0]])
    metrics = zero_shot_metrics(images, classes, labels)
    scores = (images @ classes.T)[:, 0]  # (N,)
    assert metrics["zero_shot_top1"] == 1.0
    assert metrics["zero_shot_mAP"] == pytest.approx(
        _average_precision(torch.sigmoid(scores).tolist(), labels[:, 0].int().tolist()), rel=1e-5
    )


def test_regression_metrics_by_hand() -> None:
    values, target = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 2.0])
    mean = 2.0
    residual = 0 + 1 + 4
    total = (1 - mean) ** 2 + (3 - mean) ** 2 + (2 - mean) ** 2
    metrics = regression_metrics(values, target)
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["rmse"] == pytest.approx((residual / 3) ** 0.5)
    assert metrics["r2"] == pytest.approx(1 - residual / total)
