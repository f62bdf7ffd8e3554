"""Figures of the predict task's heads: confusion matrices, per-label F1 bars, predicted-vs-true scatters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmray.figures import plt, png_bytes


def confusion_matrix_png(matrix: Any, class_names: Sequence[str], title: str) -> bytes:
    """Counts of (true, predicted) classes, each row also shown as the share of its true class."""
    counts = matrix.cpu().numpy()
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    for row in ticks:
        for col in ticks:
            colour = "white" if shares[row, col] > 0.5 else "black"
            axis.text(col, row, f"{int(counts[row, col])}", ha="center", va="center", color=colour, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title=f"{title}: confusion matrix")
    return png_bytes(figure)


def per_label_f1_png(f1: Any, support: Any, label_names: Sequence[str], title: str) -> bytes:
    """F1 per label as bars, labels with positives in the split only, ordered by F1."""
    scores, counts = f1.cpu().tolist(), support.cpu().tolist()
    rows = sorted(
        ((name, score, int(count)) for name, score, count in zip(label_names, scores, counts, strict=True) if count),
        key=lambda row: row[1],
    )
    figure, axis = plt.subplots(figsize=(7, max(3.0, 0.22 * len(rows) + 1)))
    axis.barh([f"{name} ({count})" for name, _, count in rows], [score for _, score, _ in rows], color="tab:blue")
    axis.set(xlim=(0, 1), xlabel="F1", title=f"{title}: F1 per label (positives in brackets)")
    axis.tick_params(axis="y", labelsize=7)
    return png_bytes(figure)


def predicted_vs_true_png(predicted: Any, true: Any, title: str) -> bytes:
    """Predicted against true values with the identity line."""
    x, y = true.cpu().numpy(), predicted.cpu().numpy()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(x, y, s=6, alpha=0.3)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    axis.plot([low, high], [low, high], color="tab:red", linewidth=1)
    axis.set(xlabel="true", ylabel="predicted", title=f"{title}: predicted vs true")
    axis.grid(alpha=0.3)
    return png_bytes(figure)
