"""Metrics of prediction heads through torchmetrics (the only module that imports it). Multi-label macro
averages count only labels with a positive example in the split (others have no average precision); with
none, mAP and both F1 scores are NaN. A single label is scored as a binary problem (torchmetrics'
multi-label functions need two), which gives the value it would get among others."""

from __future__ import annotations

from typing import Literal

import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multilabel_average_precision,
    multilabel_f1_score,
)
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error, r2_score


def multiclass_metrics(logits: torch.Tensor, target: torch.Tensor, classes: int) -> dict[str, float]:
    """accuracy, macro F1 (over classes in target or prediction), micro F1. logits: (N, C); target: (N,)"""
    target = target.long()
    per_class = multiclass_f1_score(logits, target, num_classes=classes, average="none")  # (C,)
    occurring = (
        torch.bincount(target, minlength=classes).bool() | torch.bincount(logits.argmax(-1), minlength=classes).bool()
    )  # (C,)
    return {
        "accuracy": float(multiclass_accuracy(logits, target, num_classes=classes, average="micro")),
        "f1_macro": float(per_class[occurring].mean()),
        "f1_micro": float(multiclass_f1_score(logits, target, num_classes=classes, average="micro")),
    }


def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class). -> (C, C) int64"""
    return multiclass_confusion_matrix(logits, target.long(), num_classes=classes).long()


def _f1(
    probabilities: torch.Tensor, target: torch.Tensor, threshold: float, average: Literal["none", "micro"] = "none"
) -> torch.Tensor:
    """F1 of each label, or (`micro`) of their pooled counts. probabilities: (N, K) in [0, 1]; target: (N, K)
    int64 -> (K,), or one value for `micro`"""
    labels = target.shape[1]
    if labels == 0:
        return probabilities.new_zeros(0)  # (0,)
    if labels == 1:  # pooled counts of one label are that label's
        return binary_f1_score(probabilities[:, 0], target[:, 0], threshold=threshold).reshape(1)  # (1,)
    return multilabel_f1_score(probabilities, target, num_labels=labels, threshold=threshold, average=average)


def multilabel_per_label_f1(logits: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """F1 of each label at a probability threshold. logits, target: (N, K) -> (K,)"""
    return _f1(torch.sigmoid(logits.float()), target.long(), threshold)


def multilabel_metrics(logits: torch.Tensor, target: torch.Tensor, threshold: float) -> dict[str, float]:
    """mAP and macro F1 over the labels with a positive example, micro F1 over all; NaN scores when
    no label has one. logits, target: (N, K) multi-hot."""
    probabilities = torch.sigmoid(logits.float())  # (N, K)
    occurring = target.sum(dim=0) > 0  # (K,)
    target = target.long()  # (N, K)
    if not bool(occurring.any()):
        return {"mAP": float("nan"), "f1_macro": float("nan"), "f1_micro": float("nan"), "labels_present": 0.0}
    present, present_target = probabilities[:, occurring], target[:, occurring]  # (N, K_present) each
    if present.shape[1] == 1:  # torchmetrics' multi-label functions need two labels
        precision = binary_average_precision(present[:, 0], present_target[:, 0])  # ()
    else:
        precision = multilabel_average_precision(present, present_target, num_labels=present.shape[1], average="none")
    per_label = _f1(probabilities, target, threshold)  # (K,)
    return {
        "mAP": float(precision.mean()),
        "f1_macro": float(per_label[occurring].mean()),
        "f1_micro": float(_f1(probabilities, target, threshold, "micro")),
        "labels_present": float(occurring.sum()),
    }


def regression_metrics(values: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MAE, RMSE and R² (1 − residual / total sum of squares). values, target: (N,)"""
    values, target = values.float(), target.float()
    return {
        "mae": float(mean_absolute_error(values, target)),
        "rmse": float(mean_squared_error(values, target, squared=False)),
        "r2": float(r2_score(values, target)) if target.numel() > 1 else float("nan"),
    }
