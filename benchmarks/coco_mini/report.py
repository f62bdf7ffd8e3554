"""The table: the shipped job and the baselines on the report halvings, with paired differences."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .baselines import linear_infonce, procrustes, procrustes_on_unit_features
from .features import Features
from .folds import REPORT_SEEDS, halvings
from .heads import HeadSetting
from .protocol import Method, heads_method, paired, scores, summary

EARLIER_JOB = HeadSetting(
    embed_dim=256, init_projections="random", init_temperature=0.05, epochs=20, lr=3e-3, weight_decay=0.0
)
"""jobs/coco-mini-clip.yaml before this protocol (chosen on 16-image folds)."""


def methods(shipped: HeadSetting) -> dict[str, Method]:
    rows: dict[str, Method] = {
        "shipped job": heads_method(shipped),
        "Procrustes": procrustes,
        "Procrustes, unit features": procrustes_on_unit_features,
        "linear InfoNCE": linear_infonce,
        "earlier job settings": heads_method(EARLIER_JOB),
    }
    if shipped.init_projections == "procrustes":
        rows["shipped, random-start heads"] = heads_method(replace(shipped, init_projections="random"))
    return rows


def report(features: Features, shipped: HeadSetting) -> dict[str, Any]:
    """Every row's held-out rsum per report fold, mean ± sd, and its paired difference from Procrustes."""
    folds = halvings(features.images.shape[0], REPORT_SEEDS)
    rows = {name: scores(method, features, folds) for name, method in methods(shipped).items()}
    table = {}
    for name, values in rows.items():
        mean, sd = summary(values)
        diff_mean, diff_sd = summary(paired(values, rows["Procrustes"]))
        table[name] = {"mean": mean, "sd": sd, "vs_procrustes": diff_mean, "vs_procrustes_sd": diff_sd,
                       "folds": values}  # fmt: skip
    return {"folds": [fold.name for fold in folds], "rows": table, "shipped": shipped.describe()}


def print_report(result: dict[str, Any]) -> None:
    folds = len(result["folds"])
    print(f"\ncoco-mini, {folds} folds of 40 held-out images (200 captions) from {folds // 2} random halvings; "
          "rsum in % (max 600)")  # fmt: skip
    print(f"{'model':<30}{'mean ± sd':>16}{'vs Procrustes (paired)':>26}")
    for name, row in result["rows"].items():
        difference = f"{row['vs_procrustes']:+.1f} ± {row['vs_procrustes_sd']:.1f}"
        print(f"{name:<30}{row['mean']:9.1f} ± {row['sd']:4.1f}{difference:>26}")
    print(f"shipped: {result['shipped']}")
