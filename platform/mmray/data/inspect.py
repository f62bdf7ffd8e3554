"""Validating a COCO split and summarising what it holds and what is wrong with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from mmray.config.data import LoaderOptions
from mmray.data.coco import load_coco
from mmray.data.records import ImageRecord, LoadReport
from mmray.errors import DataError

IDS_SHOWN = 1000
"""Ids listed per kind of problem in a summary (the count is always whole)."""


def problem_table(report: LoadReport) -> dict[str, dict[str, Any]]:
    """Each kind of problem with its count and (the first `IDS_SHOWN`) ids."""
    table = {kind: {"count": len(ids), "ids": ids[:IDS_SHOWN]} for kind, ids in report.problems().items()}
    table["unknown_categories"]["category_ids"] = report.unknown_category_ids
    return table


@dataclass(frozen=True)
class InspectionSummary:
    """Counts describing a split and its problems; `usable` is False when no image can be trained on, when
    loading it with `on_bad_record="error"` found a problem, or with `strict` when it has any problem."""

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
    problem_count: int
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    merged_files: int = 0
    strict: bool = False
    usable: bool = True
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(
    report: LoadReport, records: list[ImageRecord], categories: int, strict: bool, error: str | None
) -> InspectionSummary:
    per_image = [len(r.captions) for r in records]
    return InspectionSummary(
        images=report.total_images,
        usable_images=len(records),
        captions=sum(per_image),
        captions_per_image_min=min(per_image, default=0),
        captions_per_image_mean=round(mean(per_image), 3) if per_image else 0.0,
        captions_per_image_max=max(per_image, default=0),
        categories=categories,
        instances=sum(len(r.boxes) for r in records),
        missing_images=len(report.missing_images),
        unreadable_images=len(report.unreadable_images),
        images_without_captions=len(report.without_captions),
        orphan_captions=len(report.orphan_captions),
        problem_count=report.problem_count,
        problems=problem_table(report),
        merged_files=len(report.duplicate_files) if report.merged_files else 0,
        strict=strict,
        usable=error is None,
        error=error,
    )


def inspect_split(
    captions: str,
    images: str,
    instances: str | None,
    options: LoaderOptions,
    progress: bool = True,
    strict: bool = False,
) -> InspectionSummary:
    """Load a split as `options` say and count what is there and what is wrong. Problems are skipped, or with
    `on_bad_record="error"` make the split unusable (as they make a job using it fail); `strict` makes any
    problem leave the split unusable while still counting what it holds."""
    try:
        dataset = load_coco(captions, images, instances, progress=progress, **options.coco_options())
    except DataError as exc:
        return _summary(exc.report or LoadReport(), [], 0, strict, str(exc))
    report = dataset.report
    refused = strict and report.problem_count > 0
    error = f"{captions}: --strict refuses any problem: {report.describe()}" if refused else None
    return _summary(report, dataset.records, len(dataset.categories), strict, error)
