"""The per-image record every dataset yields, and the report of records that could not be used."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class LoadReport:
    """Counts and ids of images that were found unusable while loading."""

    total_images: int = 0
    missing_images: list[int] = field(default_factory=list)
    unreadable_images: list[int] = field(default_factory=list)
    without_captions: list[int] = field(default_factory=list)
    orphan_captions: int = 0

    @property
    def bad_ids(self) -> list[int]:
        return sorted({*self.missing_images, *self.unreadable_images, *self.without_captions})

    @property
    def usable_images(self) -> int:
        return self.total_images - len(self.bad_ids)

    def describe(self, limit: int = 10) -> str:
        """One sentence naming each kind of bad record with its count and first ids."""
        parts = []
        for label, ids in (
            ("missing image file", self.missing_images),
            ("unreadable image", self.unreadable_images),
            ("no captions", self.without_captions),
        ):
            if ids:
                shown = ", ".join(str(i) for i in ids[:limit])
                more = f", … {len(ids) - limit} more" if len(ids) > limit else ""
                parts.append(f"{len(ids)} with {label} (ids {shown}{more})")
        if self.orphan_captions:
            parts.append(f"{self.orphan_captions} captions name an image id not in the file")
        if not parts:
            return f"all {self.total_images} images usable"
        return f"{len(self.bad_ids)} of {self.total_images} images unusable: " + "; ".join(parts)
