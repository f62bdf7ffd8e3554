"""Validating a COCO split and summarising what it holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import mean
from typing import Any, Literal

from mmray.data.coco import load_coco
from mmray.data.records import LoadReport
from mmray.errors import DataError


@dataclass(frozen=True)
class InspectionSummary:
    """Counts describing a split; `usable` is False when no image can be trained on."""

    images: int
    usable_images: int
    captions: int
    captions_per_image_min: int
    captions_per_image_mean: float
    captions_per_image_max: int
    categories: int
    instances: int
    missing_images: int
    unreadable_images: int
    images_without_captions: int
    orphan_captions: int
    usable: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary_of_failure(error: DataError) -> InspectionSummary:
    report = error.report or LoadReport()
    return InspectionSummary(
        images=report.total_images,
        usable_images=0,
        captions=0,
        captions_per_image_min=0,
        captions_per_image_mean=0.0,
        captions_per_image_max=0,
        categories=0,
        instances=0,
        missing_images=len(report.missing_images),
        unreadable_images=len(report.unreadable_images),
        images_without_captions=len(report.without_captions),
        orphan_captions=report.orphan_captions,
        usable=False,
        error=str(error),
    )


def inspect_split(
    captions: str,
    images: str,
    instances: str | None = None,
    image_check: Literal["decode", "exists", "none"] = "decode",
    progress: bool = True,
    on_bad_record: Literal["skip", "error"] = "skip",
) -> InspectionSummary:
    """Load a split and count what is there and what is wrong; bad records are skipped, or with
    `on_bad_record="error"` make the split unusable (as they make a job using it fail)."""
    try:
        dataset = load_coco(
            captions, images, instances, on_bad_record=on_bad_record, image_check=image_check, progress=progress
        )
    except DataError as exc:
        return _summary_of_failure(exc)
    per_image = [len(r.captions) for r in dataset.records]
    report = dataset.report
    return InspectionSummary(
        images=report.total_images,
        usable_images=len(dataset.records),
        captions=sum(per_image),
        captions_per_image_min=min(per_image),
        captions_per_image_mean=round(mean(per_image), 3),
        captions_per_image_max=max(per_image),
        categories=len(dataset.categories),
        instances=sum(len(r.boxes) for r in dataset.records),
        missing_images=len(report.missing_images),
        unreadable_images=len(report.unreadable_images),
        images_without_captions=len(report.without_captions),
        orphan_captions=report.orphan_captions,
        usable=True,
    )
