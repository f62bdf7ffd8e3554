"""PNG figures of a run: loss and Recall@K curves."""

from __future__ import annotations

import io
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
