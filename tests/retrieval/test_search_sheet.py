"""The search sheet: cells of at most 5 a row, headings apart from captions, long captions cut."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mmray.figures import wrap_text
from mmray.retrieval.sheet import retrieval_sheet_png


def test_long_captions_wrap_to_five_lines_and_end_in_an_ellipsis() -> None:
    wrapped = wrap_text("a small red circle in the top left corner " * 10)
    assert len(wrapped.splitlines()) == 5 and wrapped.endswith("…")
    assert all(len(line) <= 34 for line in wrapped.splitlines()[:-1])
    assert wrap_text("a red circle") == "a red circle"


def test_the_sheet_puts_five_cells_a_row() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    results = [(image, f"#{rank}  image {rank}  0.9", "a caption " * 8) for rank in range(1, 8)]
    one_row = Image.open(io.BytesIO(retrieval_sheet_png("a query", None, results[:3], "top 3")))
    two_rows = Image.open(io.BytesIO(retrieval_sheet_png("a query", image, results, "top 7")))
    assert one_row.width > 2 * one_row.height
    assert two_rows.height > 1.7 * one_row.height and two_rows.width > one_row.width
