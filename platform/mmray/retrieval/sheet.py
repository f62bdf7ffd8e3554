"""The query + results sheet of `mmray search --png`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmray.figures import plt, png_bytes, wrap_text


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
