"""The Ray Train callback that keeps a run's model pointers current. Ray Train's controller unpickles it for
every run, so this module and `run_pointers.py` import neither torch nor the model code."""

from __future__ import annotations

from typing import Any

from ray.train.v2.api.callback import UserCallback

from mmray.train.run_pointers import point_at_kept


class PointAtKept(UserCallback):  # type: ignore[misc]
    """Ray Train callback (in the Train controller, after Ray registered and pruned each checkpoint): the run's
    best and latest model pointers name checkpoints it keeps."""

    def __init__(self, run_dir: str, score_mode: str) -> None:
        self.run_dir, self.score_mode = run_dir, score_mode

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is not None:
            point_at_kept(self.run_dir, self.score_mode)
