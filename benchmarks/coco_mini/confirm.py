"""The search's leaders scored again on halvings no trial saw: the maximum over many noisy trials
overstates its winner, so the choice is made on these fresh search folds, paired with Procrustes."""

from __future__ import annotations

from typing import Any

from .baselines import procrustes
from .features import Features
from .folds import halvings
from .heads import HeadSetting
from .protocol import heads_method, paired, scores, summary

CONFIRM_SEEDS = tuple(range(200, 215))
"""Fifteen more halvings (30 folds), apart from the search's and the report's."""


def leaders(stages: list[dict[str, Any]], count: int) -> list[HeadSetting]:
    """The best `count` distinct settings of every search stage together."""
    trials = sorted((t for stage in stages for t in stage["trials"]), key=lambda t: -t["rsum"])
    chosen: list[HeadSetting] = []
    for trial in trials:
        setting = HeadSetting(**trial["setting"])
        if setting not in chosen:
            chosen.append(setting)
    return chosen[:count]


def confirm(features: Features, candidates: list[HeadSetting]) -> list[dict[str, Any]]:
    """Each candidate's mean rsum and paired difference from Procrustes on the confirmation folds, best first."""
    folds = halvings(features.images.shape[0], CONFIRM_SEEDS)
    baseline = scores(procrustes, features, folds)
    rows = []
    for setting in candidates:
        values = scores(heads_method(setting), features, folds)
        mean, sd = summary(values)
        difference, difference_sd = summary(paired(values, baseline))
        rows.append({"setting": setting.__dict__, "rsum": mean, "sd": sd, "vs_procrustes": difference,
                     "vs_procrustes_sd": difference_sd})  # fmt: skip
        print(f"{mean:7.1f} ± {sd:4.1f}  vs Procrustes {difference:+5.1f} ± {difference_sd:4.1f}  "
              f"{setting.describe()}", flush=True)  # fmt: skip
    return sorted(rows, key=lambda row: -row["rsum"])
