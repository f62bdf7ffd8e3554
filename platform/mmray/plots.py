"""PNG figures of a run: loss and Recall@K curves."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_BOOKKEEPING = {"epoch", "step", "samples_per_s", "epoch_seconds", "lr", "temperature", "checkpoint_score"}


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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def retrieval_sheet_png(
    query_text: str | None, query_image: Any | None, results: Sequence[tuple[Any, str]], title: str
) -> bytes:
    """The query (image and/or text) followed by each result image with its label, in one row."""
    panels = 1 + len(results)
    figure, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.8), squeeze=False)
    query_axis = axes[0][0]
    if query_image is not None:
        query_axis.imshow(query_image)
    query_axis.set_title("query", fontsize=9)
    if query_text:
        query_axis.text(
            0.5, -0.08, _wrap(query_text), ha="center", va="top", fontsize=7, transform=query_axis.transAxes
        )
    for axis, (image, label) in zip(axes[0][1:], results, strict=True):
        axis.imshow(image)
        axis.text(0.5, -0.08, _wrap(label), ha="center", va="top", fontsize=7, transform=axis.transAxes)
    for axis in axes[0]:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _wrap(text: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text, width)[:4])
