"""Figures as PNG bytes (matplotlib without a display) and text wrapped to fit a figure's cell."""

from __future__ import annotations

import io
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plt", "png_bytes", "wrap_text"]


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
