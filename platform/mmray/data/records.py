"""The per-image record every dataset yields, and the report of records that could not be used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IMAGE_TARGETS = ("labels", "object_count", "covered_fraction")
"""Targets every image record has; caption targets may not reuse these names."""


@dataclass(frozen=True)
class Category:
    """A COCO category; `index` is its position in multi-hot label vectors."""

    id: int
    name: str
    supercategory: str
    index: int


@dataclass(frozen=True)
class ImageRecord:
    """One image with its captions, labels, boxes and regression targets."""

    image_id: int
    file_name: str
    image_uri: str
    width: int
    height: int
    captions: tuple[str, ...]
    caption_ids: tuple[int, ...]
    labels: tuple[int, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    box_categories: tuple[int, ...]
    object_count: int
    covered_fraction: float
    caption_targets: tuple[dict[str, float], ...] = ()
    """Per caption, the numeric targets its annotation carries (e.g. a question's answer); may be empty."""


def _shown(ids: Sequence[object], limit: int) -> str:
    more = f", … {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(str(i) for i in ids[:limit]) + more


@dataclass
class LoadReport:
    """What was wrong with a split's files, by kind, with the ids concerned.

    Image ids: `missing_images`, `unreadable_images`, `without_captions` (no caption left), `duplicate_image_ids`
    (listed more than once in `images`; the first entry is kept). `duplicate_files`: groups of image ids whose
    files hold the same bytes, the id kept first (the others are skipped, or with `merged_files` joined into
    it). Annotation ids: `empty_captions` (empty or whitespace only), `duplicate_captions` (a caption without
    targets repeating an earlier one of its image), `orphan_captions` and `orphan_instances` (naming an image id
    not in the file), `duplicate_instances` (an instance id listed again; the first is kept), `unknown_categories`
    (instances whose `category_id`, listed in `unknown_category_ids`, is not in `categories`). Every problem
    leaves out what it names; the image is kept where something usable remains."""

    total_images: int = 0
    missing_images: list[int] = field(default_factory=list)
    unreadable_images: list[int] = field(default_factory=list)
    without_captions: list[int] = field(default_factory=list)
    duplicate_files: list[tuple[int, ...]] = field(default_factory=list)
    merged_files: bool = False
    duplicate_image_ids: list[int] = field(default_factory=list)
    empty_captions: list[int] = field(default_factory=list)
    duplicate_captions: list[int] = field(default_factory=list)
    orphan_captions: list[int] = field(default_factory=list)
    orphan_instances: list[int] = field(default_factory=list)
    duplicate_instances: list[int] = field(default_factory=list)
    unknown_categories: list[int] = field(default_factory=list)
    unknown_category_ids: list[int] = field(default_factory=list)

    @property
    def copies(self) -> list[int]:
        """Image ids whose file is another's (each duplicate group but its kept id)."""
        return sorted(i for group in self.duplicate_files for i in group[1:])

    @property
    def bad_ids(self) -> list[int]:
        """Images left out as unusable (merged copies are not: they live on in the image they joined)."""
        skipped = [] if self.merged_files else self.copies
        return sorted({*self.missing_images, *self.unreadable_images, *self.without_captions, *skipped})

    @property
    def usable_images(self) -> int:
        return self.total_images - len(self.bad_ids) - (len(self.copies) if self.merged_files else 0)

    def problems(self) -> dict[str, list[Any]]:
        """The ids of each kind of problem, in the order they are reported; merged duplicate files are not one."""
        return {
            "missing_images": self.missing_images,
            "unreadable_images": self.unreadable_images,
            "images_without_captions": self.without_captions,
            "duplicate_files": [] if self.merged_files else [list(g) for g in self.duplicate_files],
            "duplicate_image_ids": self.duplicate_image_ids,
            "empty_captions": self.empty_captions,
            "duplicate_captions": self.duplicate_captions,
            "orphan_captions": self.orphan_captions,
            "orphan_instances": self.orphan_instances,
            "duplicate_instances": self.duplicate_instances,
            "unknown_categories": self.unknown_categories,
        }

    @property
    def problem_count(self) -> int:
        return sum(len(ids) for ids in self.problems().values())

    def describe(self, limit: int = 10) -> str:
        """One sentence naming each kind of problem with its count and first ids."""
        groups = [" = ".join(str(i) for i in group) for group in self.duplicate_files]
        unknown = _shown(self.unknown_category_ids, limit)
        kept = "the first of each kept, or data.merge_duplicate_files=true makes each one image with all their captions"
        table: tuple[tuple[str, Sequence[object], str], ...] = (
            ("with missing image file (ids", self.missing_images, ")"),
            ("with unreadable image (ids", self.unreadable_images, ")"),
            ("with no captions (ids", self.without_captions, ")"),
            ("image files under several ids (ids", [] if self.merged_files else groups, f"; {kept})"),
            ("image ids listed more than once in 'images' (the first entry kept; ids", self.duplicate_image_ids, ")"),
            ("empty or whitespace-only captions (annotation ids", self.empty_captions, ")"),
            ("captions repeating another of their image's (annotation ids", self.duplicate_captions, ")"),
            ("captions naming an image id not in the file (annotation ids", self.orphan_captions, ")"),
            ("instances naming an image id not in the file (annotation ids", self.orphan_instances, ")"),
            ("instance ids listed more than once (the first kept; annotation ids", self.duplicate_instances, ")"),
            (
                f"instances of a category not in 'categories' (category ids {unknown}; annotation ids",
                self.unknown_categories,
                ")",
            ),
        )
        parts = [f"{len(ids)} {label} {_shown(ids, limit)}{end}" for label, ids, end in table if ids]
        merged = f"; merged: {len(groups)} image files under several ids ({_shown(groups, limit)})"
        merged = merged if groups and self.merged_files else ""
        if not parts:
            return f"all {self.usable_images} images usable{merged}"
        if self.bad_ids:
            return f"{len(self.bad_ids)} of {self.total_images} images unusable: " + "; ".join(parts) + merged
        return f"all {self.usable_images} images usable, but " + "; ".join(parts) + merged
