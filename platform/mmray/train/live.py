"""Training progress as a bar on a terminal: rank 0 posts where the run is to a small actor, and the driver draws it
while the run goes on. Elsewhere (a pipe, a log file, `ray job submit`) the workers' periodic plain lines remain."""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any

PROGRESS_ENV = "MMRAY_PROGRESS"
"""`bar` or `lines`; by default a bar when stderr is a terminal, else lines."""
POLL_S = 0.5


class ProgressBoard:
    """Where a run is: rank 0 posts, the driver reads (a Ray actor without CPUs)."""

    def __init__(self) -> None:
        self.state: dict[str, float] | None = None

    def post(self, state: dict[str, float]) -> None:
        self.state = state

    def read(self) -> dict[str, float] | None:
        return self.state


def wants_bar() -> bool:
    mode = os.environ.get(PROGRESS_ENV, "auto")
    return mode == "bar" or (mode == "auto" and sys.stderr.isatty())


def draw_until_done(board: Any, thread: threading.Thread) -> None:
    """Draw the board's state as a bar until `thread` ends; lines printed meanwhile appear above the bar."""
    import ray
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[rate]} samples/s"),
        TimeRemainingColumn(),
    )
    console = Console(stderr=True, force_terminal=True)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("training", total=None, epoch="-", epochs="-", loss="-", rate="-")
        while True:
            thread.join(POLL_S)
            state = ray.get(board.read.remote())
            if state:
                steps = int(state["steps"])
                progress.update(
                    task,
                    total=int(state["epochs"]) * steps,
                    completed=(int(state["epoch"]) - 1) * steps + int(state["step"]),
                    epoch=int(state["epoch"]),
                    epochs=int(state["epochs"]),
                    loss="-" if math.isnan(state["loss"]) else f"{state['loss']:.4f}",
                    rate=f"{state['samples_per_s']:.0f}",
                )
            if not thread.is_alive():
                break
