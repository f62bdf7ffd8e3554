"""`curves.png` of a training run: losses per epoch and validation metrics per evaluated epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmray.figures import plt, png_bytes

_BOOKKEEPING = {
    "epoch", "step", "samples_per_s", "epoch_seconds", "first_batch_seconds", "input_wait_fraction", "lr",
    "temperature", "checkpoint_score",
}  # fmt: skip


def _validation_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """Validation metrics in [0, 1] (recalls, accuracies, F1, …) found in the history, in first-seen order."""
    keys: dict[str, None] = {}
    for entry in history:
        for key, value in entry.items():
            if key in _BOOKKEEPING or key.startswith("train_") or not isinstance(value, int | float):
                continue
            if 0.0 <= value <= 1.0:
                keys.setdefault(key)
    return list(keys)


def training_curves_png(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """Training losses per epoch (left) and validation metrics per evaluated epoch (right)."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for h in history for k in h if k.startswith("train_")}):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        loss_axis.plot(*zip(*points, strict=True), marker="o", label=key)
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(fontsize=8)
    keys = _validation_keys(history)
    for key in keys:
        points = [(h["epoch"], h[key]) for h in history if key in h]
        style = ":" if key.endswith("@10") else "--" if key.endswith("@5") else "-"
        metric_axis.plot(*zip(*points, strict=True), style, marker="o", label=key)
    metric_axis.set(xlabel="epoch", ylabel="value", title="validation", ylim=(0, 1.02))
    metric_axis.grid(alpha=0.3)
    if keys:
        metric_axis.legend(fontsize=8, ncol=2)
    figure.suptitle(title)
    return png_bytes(figure)
