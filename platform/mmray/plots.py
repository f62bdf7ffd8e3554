"""PNG figures of a run: loss and Recall@K curves."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def training_curves_png(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """Training loss per epoch (left) and Recall@1/5/10 both ways per evaluated epoch (right)."""
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    loss_axis.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    loss_axis.grid(alpha=0.3)
    evaluated = {h["eval_epoch"]: h for h in history if "eval_epoch" in h}
    for key, style in (("R@1", "-"), ("R@5", "--"), ("R@10", ":")):
        for direction, colour in (("i2t", "tab:blue"), ("t2i", "tab:orange")):
            name = f"{direction}_{key}"
            points = [(e, h[name]) for e, h in sorted(evaluated.items()) if name in h]
            if points:
                recall_axis.plot(*zip(*points, strict=True), style, color=colour, marker="o", label=name)
    recall_axis.set(xlabel="epoch", ylabel="recall", title="validation retrieval", ylim=(0, 1.02))
    recall_axis.grid(alpha=0.3)
    if evaluated:
        recall_axis.legend(fontsize=8, ncol=2)
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
