"""The score a checkpoint is ranked by: the task's score where its epoch measured it. Ray Train's snapshot
stores NaN and infinities as null and cannot rank a null when a run resumes, so Ray is given an unmeasured
score as the finite worst of its order instead."""

from __future__ import annotations

import math
import sys

CHECKPOINT_SCORE = "checkpoint_score"
"""Reported with every checkpoint: the task's score when it was measured that epoch, else NaN (ranked last)."""
UNMEASURED = sys.float_info.max
"""The magnitude Ray Train is given for an unmeasured score: the worst finite value of its order."""


def ranked_by_ray(score: float, mode: str) -> float:
    """`score` as Ray Train ranks it: an unmeasured (NaN) or infinite one as the finite worst for `mode`."""
    if math.isfinite(score):
        return score
    return -UNMEASURED if mode == "max" else UNMEASURED


def is_measured(score: float | None) -> bool:
    """Whether a kept checkpoint's score was measured (not None, NaN, infinite or Ray's unmeasured worst)."""
    return score is not None and math.isfinite(score) and abs(score) < UNMEASURED
