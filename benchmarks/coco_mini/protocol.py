"""Scoring on folds: rsum of the held-out side of each fold, its mean and spread, paired differences."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from mmray.metrics.retrieval import retrieval_metrics

from .baselines import Embed
from .features import Features
from .folds import Fold, FoldData, fold_data
from .heads import HeadSetting, train_heads

RSUM_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")
Method = Callable[[FoldData], tuple[Embed, Embed]]


def rsum(metrics: dict[str, Any]) -> float:
    """R@1 + R@5 + R@10 both ways, in % (at most 600)."""
    return 100.0 * sum(float(metrics[key]) for key in RSUM_KEYS)


def heads_method(setting: HeadSetting) -> Method:
    """Heads trained in this process with `setting`, as a method."""

    def fit(train: FoldData) -> tuple[Embed, Embed]:
        model = train_heads(setting, train)
        return model.project_image, model.project_text

    return fit


@torch.no_grad()
def held_out_rsum(embed: tuple[Embed, Embed], test: FoldData) -> float:
    embed_image, embed_text = embed
    return rsum(retrieval_metrics(embed_image(test.images), embed_text(test.texts), test.caption_image))


def scores(method: Method, features: Features, folds: list[Fold]) -> list[float]:
    """The held-out rsum of each fold, the method fitted on its training side."""
    out = []
    for fold in folds:
        with torch.enable_grad():
            embed = method(fold_data(features, fold.train_rows))
        out.append(held_out_rsum(embed, fold_data(features, fold.test_rows)))
    return out


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired(values: list[float], baseline: list[float]) -> list[float]:
    return [a - b for a, b in zip(values, baseline, strict=True)]
