"""A split's multi-hot labels in the order of the classes a model was trained on: an evaluation split's
instances file may list fewer categories than the training split's, or the same ones under other ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mmray.data.coco import CocoDataset
from mmray.data.records import Category, ImageRecord
from mmray.errors import DataError


def labels_for_classes(split: CocoDataset, classes: Sequence[str], reader: str) -> CocoDataset:
    """`split` with its labels over `classes`, matched by category name. Unchanged where its categories are
    those classes, or as many of other names (class names given one per label column); refused where it has
    no categories, or categories that are not among the classes. `reader` names who reads the labels."""
    names = [category.name for category in split.categories]
    if names == list(classes):
        return split
    if not names:
        raise DataError(
            f"{split.captions_uri}: {reader} reads category labels, but this split has no instances file (give it "
            "the instances file of the same images)"
        )
    unknown = [name for name in names if name not in classes]
    if unknown and len(names) == len(classes):
        return split
    if unknown:
        raise DataError(
            f"{split.instances_uri}: categories {unknown[:5]} are not among the {len(classes)} the model was trained "
            f"on ({', '.join(list(classes)[:10])}{', …' if len(classes) > 10 else ''}), so {reader} cannot score them"
        )
    column = [list(classes).index(name) for name in names]  # the split's label index -> the model's

    def relabelled(record: ImageRecord) -> ImageRecord:
        labels = [0] * len(classes)
        for index, on in enumerate(record.labels):
            labels[column[index]] = on
        return replace(record, labels=tuple(labels), box_categories=tuple(column[k] for k in record.box_categories))

    own = {category.name: category for category in split.categories}
    categories = [
        replace(own[name], index=index) if name in own else Category(-1, name, "", index)
        for index, name in enumerate(classes)
    ]
    return replace(split, records=[relabelled(r) for r in split.records], categories=categories)
