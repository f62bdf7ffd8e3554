"""PNG figures of a search: the objective per epoch of every trial, and against each searched key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.ticker import MaxNLocator

from mmray.figures import plt, png_bytes


def trial_curves_png(curves: dict[str, Sequence[tuple[int, float]]], metric: str, stopped: set[str]) -> bytes:
    """One line per trial (dashed where the scheduler stopped it early)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for trial, points in sorted(curves.items()):
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", linestyle="--" if trial in stopped else "-", label=trial)
    axis.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (dashed: stopped early)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    return png_bytes(figure)


def objective_vs_key_png(key: str, values: Sequence[Any], objectives: Sequence[float], metric: str) -> bytes:
    """The trials' final objective against one searched key (categories for non-numeric values)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric:
        axis.scatter(values, objectives)
        if values and min(values) > 0 and max(values) / min(values) > 20:
            axis.set_xscale("log")
    else:
        labels = sorted({str(v) for v in values})
        axis.scatter([labels.index(str(v)) for v in values], objectives)
        axis.set_xticks(range(len(labels)), labels)
    axis.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}")
    axis.grid(alpha=0.3)
    return png_bytes(figure)
