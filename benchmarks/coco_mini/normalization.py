"""Whether the heads should read each tower's pooled features L2-normalised (`model.normalize_features`):
the shipped setting with and without, a few of its neighbours with, and Procrustes both ways, all on the
search and confirmation halvings (40 folds, none of them reported), paired with plain Procrustes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .baselines import procrustes, procrustes_on_unit_features
from .confirm import CONFIRM_SEEDS
from .features import Features
from .folds import SEARCH_SEEDS, halvings
from .heads import HeadSetting
from .protocol import Method, heads_method, paired, scores, summary

NEIGHBOURS: tuple[dict[str, Any], ...] = (
    {"lr": 1e-3},
    {"lr": 1e-4},
    {"epochs": 40},
    {"init_temperature": 0.3},
    {"weight_decay": 0.1},
)
"""Changes to the setting tried with normalised features, one at a time."""


def compare_normalization(features: Features, setting: HeadSetting) -> list[dict[str, Any]]:
    """Each row's mean rsum and paired difference from Procrustes on the 40 folds, in the order tried."""
    folds = halvings(features.images.shape[0], SEARCH_SEEDS + CONFIRM_SEEDS)
    plain, unit = replace(setting, normalize_features=False), replace(setting, normalize_features=True)
    methods: dict[str, Method] = {
        "Procrustes, unit features": procrustes_on_unit_features,
        "setting, raw features": heads_method(plain),
        "setting, unit features": heads_method(unit),
    }
    for change in NEIGHBOURS:
        described = ", ".join(f"{key}={value}" for key, value in change.items())
        methods[f"unit features, {described}"] = heads_method(replace(unit, **change))
    baseline = scores(procrustes, features, folds)
    rows = []
    for name, method in methods.items():
        values = scores(method, features, folds)
        mean, sd = summary(values)
        difference, difference_sd = summary(paired(values, baseline))
        rows.append({"name": name, "rsum": mean, "sd": sd, "vs_procrustes": difference,
                     "vs_procrustes_sd": difference_sd})  # fmt: skip
        print(f"{name:<40}{mean:7.1f} ± {sd:4.1f}  vs Procrustes {difference:+5.1f} ± {difference_sd:4.1f}", flush=True)
    return rows
