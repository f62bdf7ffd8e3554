"""Head outputs described for people: class names with probabilities, predicted labels, values."""

from __future__ import annotations

from typing import Any

import torch

from mmray.config.prediction import MulticlassHeadConfig, MultilabelHeadConfig, PredictTaskConfig
from mmray.config.tasks import TaskSection


def _names(names: list[str] | None, count: int) -> list[str]:
    return names if names is not None and len(names) == count else [str(i) for i in range(count)]


def describe_predictions(
    task: TaskSection, outputs: dict[str, torch.Tensor], top_k: int, threshold: float | None
) -> dict[str, Any]:
    """One example's head outputs (name -> (O,)) as JSON: multiclass `label`, `probability` and the
    `top` k; multilabel `labels` over the threshold (the head's own unless given) and every label's
    probability; regression `value`."""
    if not isinstance(task, PredictTaskConfig):
        raise TypeError(f"expected a predict task, got {task.kind!r}")
    described: dict[str, Any] = {}
    for name, head in task.heads.items():
        values = outputs[name].float()  # (O,)
        if isinstance(head, MulticlassHeadConfig):
            names = _names(head.class_names, head.classes)
            probabilities = values.softmax(-1)  # (O,)
            top = probabilities.topk(min(top_k, head.classes))
            ranked = [
                {"label": names[int(i)], "index": int(i), "probability": round(float(p), 6)}
                for p, i in zip(top.values, top.indices, strict=True)
            ]
            described[name] = {"kind": head.kind, **ranked[0], "top": ranked}
        elif isinstance(head, MultilabelHeadConfig):
            names = _names(head.class_names, values.shape[0])
            probabilities = values.sigmoid()  # (O,)
            cut = head.threshold if threshold is None else threshold
            described[name] = {
                "kind": head.kind,
                "threshold": cut,
                "labels": [names[i] for i in range(len(names)) if float(probabilities[i]) >= cut],
                "probabilities": {names[i]: round(float(probabilities[i]), 6) for i in range(len(names))},
            }
        else:
            described[name] = {"kind": head.kind, "value": float(values[0])}
    return described
