"""PNG figures: training curves, retrieval sheets, confusion matrices, per-label F1, predicted vs true,
sample grids of text → image models."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib
import torch

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
    return png_bytes(figure)


def retrieval_sheet_png(
    query_text: str | None, query_image: Any | None, results: Sequence[tuple[Any, str, str]], title: str
) -> bytes:
    """The query (image and/or text), then each result in its own cell: the heading (rank, id, score)
    above the image, the caption wrapped to the cell's width below it; up to 5 cells a row."""
    columns = min(5, 1 + len(results))
    rows = -(-(1 + len(results)) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.3 * rows), squeeze=False)
    cells = [axis for row in axes for axis in row]
    query_axis = cells[0]
    if query_image is not None:
        query_axis.imshow(query_image)
    query_axis.set_title("query", fontsize=9, fontweight="bold")
    if query_text:
        # Below the query image, or in the middle of the cell when the query is text alone.
        y, align = (-0.05, "top") if query_image is not None else (0.5, "center")
        query_axis.text(
            0.5, y, wrap_text(query_text), ha="center", va=align, fontsize=8, transform=query_axis.transAxes
        )
    for axis, (image, heading, caption) in zip(cells[1:], results, strict=False):
        axis.imshow(image)
        axis.set_title(heading, fontsize=8)
        axis.text(0.5, -0.05, wrap_text(caption), ha="center", va="top", fontsize=7, transform=axis.transAxes)
    for axis in cells:
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    return png_bytes(figure)


def png_bytes(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # text outside the axes is kept
    plt.close(figure)
    return buffer.getvalue()


def wrap_text(text: str, width: int = 34, lines: int = 5) -> str:
    """At most `lines` lines of `width` characters; a longer text ends in an ellipsis."""
    wrapped = textwrap.wrap(text, width)
    return "\n".join(wrapped[:lines]) + ("…" if len(wrapped) > lines else "")


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


def sample_grid_png(captions: Sequence[str], samples: torch.Tensor, real: torch.Tensor | None = None) -> bytes:
    """captions: N texts; samples: (N, M, 3, S, S) in [0, 1]; real: (N, 3, S, S) in [0, 1] or None."""
    rows, per_row = samples.shape[0], samples.shape[1]
    if len(captions) != rows:
        raise ValueError(f"{len(captions)} captions for {rows} rows of samples")
    columns = per_row + (real is not None)
    figure, axes = plt.subplots(rows, columns + 2, figsize=(1.3 * (columns + 2), 1.3 * rows + 0.4), squeeze=False)
    for row in range(rows):
        axes[row][0].text(0.0, 0.5, wrap_text(captions[row], 36), fontsize=6.5, va="center", clip_on=False)
        images = ([real[row]] if real is not None else []) + list(samples[row])
        for column in range(columns + 2):
            axes[row][column].set_axis_off()
        for column, image in enumerate(images):
            axis = axes[row][column + 2]
            axis.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().float().numpy(), interpolation="nearest")
            if row == 0:
                axis.set_title("real" if real is not None and column == 0 else "sample", fontsize=7)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.05, hspace=0.08)
    return png_bytes(figure)
