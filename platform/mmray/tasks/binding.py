"""Resolving a predict task against its training data: class counts and names, balanced positive
weights, and checks that every head's target exists with values its loss accepts."""

from __future__ import annotations

import math

from mmray.config.fusion import FusionModelConfig, HeadConfig
from mmray.config.prediction import (
    HeadTaskConfig,
    MulticlassHeadConfig,
    MultilabelHeadConfig,
    PredictTaskConfig,
    RegressionHeadConfig,
)
from mmray.data.coco import CocoDataset
from mmray.data.label_order import labels_for_classes
from mmray.data.records import IMAGE_TARGETS
from mmray.errors import ConfigError, DataError


def caption_target_values(train: CocoDataset, target: str) -> list[float]:
    """The values of a caption target over the split (captions without it skipped)."""
    values = [t[target] for r in train.records for t in r.caption_targets if target in t]
    if not values:
        names = sorted({name for r in train.records for t in r.caption_targets for name in t})
        raise DataError(
            f"{train.captions_uri}: no caption has a target {target!r}; caption targets: {', '.join(names) or 'none'}"
            f"; image targets: {', '.join(IMAGE_TARGETS)}"
        )
    return values


def _bind_multilabel(name: str, head: MultilabelHeadConfig, train: CocoDataset) -> MultilabelHeadConfig:
    if head.target != "labels":
        raise ConfigError(f"head {name!r}: a multilabel head's target is the image labels, not {head.target!r}")
    labels = len(train.categories)
    if not labels:
        raise ConfigError(f"head {name!r} predicts category labels, but the data has no instances file with categories")
    if head.classes is not None and head.classes != labels:
        raise ConfigError(f"head {name!r}: classes is {head.classes}, the data has {labels} categories")
    update: dict[str, object] = {"classes": labels}
    if head.class_names is None:
        update["class_names"] = [c.name for c in train.categories]
    if head.pos_weight == "balanced":  # negatives ÷ positives per label (1 for a label never positive)
        positives = [sum(r.labels[k] for r in train.records) for k in range(labels)]
        update["pos_weight"] = [(len(train.records) - p) / p if p else 1.0 for p in positives]
    elif isinstance(head.pos_weight, list) and len(head.pos_weight) != labels:
        raise ConfigError(f"head {name!r}: pos_weight has {len(head.pos_weight)} values for {labels} labels")
    return head.model_copy(update=update)


def _bind_head(name: str, head: HeadTaskConfig, train: CocoDataset) -> HeadTaskConfig:
    if isinstance(head, MultilabelHeadConfig):
        return _bind_multilabel(name, head, train)
    if head.target == "labels":
        raise ConfigError(f"head {name!r}: the multi-hot labels need a multilabel head, not {head.kind}")
    if head.target in IMAGE_TARGETS:
        if train.instances_uri is None:
            raise ConfigError(f"head {name!r}: target {head.target!r} is counted from the instances file, and the "
                              "training split has no instances file (data.train.instances)")  # fmt: skip
        return head
    values = caption_target_values(train, head.target)
    if any(math.isnan(v) for v in values):
        raise DataError(f"head {name!r}: target {head.target!r} has NaN values in {train.captions_uri}")
    if isinstance(head, MulticlassHeadConfig):
        bad = sorted({v for v in values if not (v.is_integer() and 0 <= v < head.classes)})
        if bad:
            raise DataError(
                f"head {name!r}: target {head.target!r} must be class indices 0..{head.classes - 1}, got {bad[:5]}"
            )
    return head


def evaluated_split(config: PredictTaskConfig, split: CocoDataset) -> CocoDataset:
    """`split` with its labels in the order of the multilabel heads' classes; refused where a head's image
    target is counted from an instances file the split lacks."""
    for name, head in config.heads.items():
        if head.target in IMAGE_TARGETS and head.target != "labels" and split.instances_uri is None:
            raise DataError(
                f"{split.captions_uri}: head {name!r}: target {head.target!r} is counted from the instances file, "
                "and this split has none (give it the instances file of its images)"
            )
        if isinstance(head, MultilabelHeadConfig) and head.class_names is not None:
            split = labels_for_classes(split, head.class_names, f"head {name!r}")
    return split


def head_outputs(config: HeadTaskConfig) -> int:
    """The width of a head's output: 1 value for regression, one logit per class otherwise."""
    if isinstance(config, RegressionHeadConfig):
        return 1
    if config.classes is None:
        raise ConfigError(f"head on {config.target!r} has no class count yet; it is taken from the training data")
    return config.classes


def sized_heads(config: PredictTaskConfig, model_config: FusionModelConfig) -> dict[str, HeadConfig]:
    """One model head per task head, sized from it (hidden width and dropout from `model.heads`)."""
    unknown = sorted(set(model_config.heads) - set(config.heads))
    if unknown:
        raise ConfigError(
            f"model.heads names {unknown}, which the task does not define; task heads: {sorted(config.heads)}"
        )
    return {
        name: model_config.heads.get(name, HeadConfig()).model_copy(update={"outputs": head_outputs(head)})
        for name, head in config.heads.items()
    }


def bind_predict_task(
    config: PredictTaskConfig, model_config: FusionModelConfig, train: CocoDataset
) -> tuple[PredictTaskConfig, FusionModelConfig]:
    """The task with every head resolved against `train`, and the model with a head per task head."""
    bound = config.model_copy(update={"heads": {name: _bind_head(name, h, train) for name, h in config.heads.items()}})
    return bound, model_config.model_copy(update={"heads": sized_heads(bound, model_config)})
