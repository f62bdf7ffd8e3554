"""COCO-format loading through pycocotools (the only module that imports it)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmray import storage
from mmray.data.image_files import check_decodable, existing_files
from mmray.data.records import IMAGE_TARGETS, Category, ImageRecord, LoadReport
from mmray.errors import DataError
from mmray.progress import track

logger = logging.getLogger(__name__)


@dataclass
class CocoDataset:
    """The usable records of a COCO split, its categories and the report of skipped images."""

    records: list[ImageRecord]
    categories: list[Category]
    report: LoadReport
    captions_uri: str
    instances_uri: str | None
    images_uri: str

    @property
    def caption_count(self) -> int:
        return sum(len(r.captions) for r in self.records)


def _read_coco(uri: str, required: tuple[str, ...]) -> COCO:
    try:
        content = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: not valid JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise DataError(f"{uri}: expected a COCO JSON object, got {type(content).__name__}")
    missing = [key for key in required if key not in content]
    if missing:
        raise DataError(f"{uri}: not a COCO annotation file, missing keys {missing}")
    coco = COCO()
    coco.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _covered_fraction(annotations: list[dict[str, Any]], height: int, width: int) -> float:
    """Fraction of the image covered by the union of the instances' masks (boxes when no mask)."""
    if not annotations or height <= 0 or width <= 0:
        return 0.0
    rles = []
    for ann in annotations:
        segmentation = ann.get("segmentation")
        if not segmentation:
            x, y, w, h = ann["bbox"]
            segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        encoded = mask_utils.frPyObjects(segmentation, height, width)
        rles.extend(encoded if isinstance(encoded, list) else [encoded])
    union = mask_utils.merge(rles)
    return float(mask_utils.area(union)) / float(height * width)


def caption_targets(annotation: dict[str, Any], uri: str) -> dict[str, float]:
    """The `targets` mapping of a caption annotation (name → number), checked."""
    targets = annotation.get("targets", {})
    if not isinstance(targets, dict):
        raise DataError(f"{uri}: annotation {annotation.get('id')}: 'targets' must be a mapping, got {targets!r}")
    checked = {}
    for name, value in targets.items():
        if name in IMAGE_TARGETS:
            raise DataError(f"{uri}: annotation {annotation.get('id')}: target name {name!r} is reserved for images")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(
                f"{uri}: annotation {annotation.get('id')}: target {name!r} must be a number, got {value!r}"
            )
        checked[str(name)] = float(value)
    return checked


def _categories(instances: COCO | None) -> list[Category]:
    if instances is None:
        return []
    ordered = sorted(instances.loadCats(instances.getCatIds()), key=lambda c: c["id"])
    return [
        Category(id=c["id"], name=c["name"], supercategory=c.get("supercategory", ""), index=i)
        for i, c in enumerate(ordered)
    ]


def _find_bad_images(
    images: list[dict[str, Any]], images_uri: str, check: str, report: LoadReport, progress: bool
) -> None:
    if check == "none":
        return
    present = existing_files(images_uri, (img["file_name"] for img in images))
    report.missing_images = sorted(img["id"] for img in images if img["file_name"] not in present)
    if check != "decode":
        return
    by_uri = {storage.join(images_uri, img["file_name"]): img["id"] for img in images if img["file_name"] in present}
    checked = track(check_decodable(by_uri), "checking images", total=len(by_uri), enabled=progress)
    report.unreadable_images = sorted(by_uri[uri] for uri, ok in checked if not ok)


def check_image_directory(images: str, image_check: str) -> None:
    """A local image directory that does not exist is one error, not every image reported missing."""
    if image_check != "none" and not storage.is_s3(images) and not os.path.isdir(images):
        what = "is a file, not a directory" if os.path.exists(images) else "does not exist"
        raise DataError(f"image directory {images} {what}")


def load_coco(
    captions: str,
    images: str,
    instances: str | None = None,
    on_bad_record: Literal["skip", "error"] = "skip",
    image_check: Literal["decode", "exists", "none"] = "exists",
    progress: bool = True,
) -> CocoDataset:
    """Read a COCO captions file (and optionally its instances file) into per-image records.

    Images without captions, with a missing file or (with `image_check="decode"`) an undecodable
    file are reported: skipped with a warning naming their ids, or rejected with `DataError`.
    """
    if not storage.is_s3(images):
        images = os.path.abspath(images)
    caps = _read_coco(captions, ("images", "annotations"))
    inst = _read_coco(instances, ("images", "annotations", "categories")) if instances else None
    categories = _categories(inst)
    index_of = {c.id: c.index for c in categories}

    image_entries = sorted(caps.dataset["images"], key=lambda img: img["id"])
    report = LoadReport(total_images=len(image_entries))
    captions_of: dict[int, list[tuple[int, str, dict[str, float]]]] = defaultdict(list)
    for ann in caps.dataset["annotations"]:
        if ann["image_id"] in caps.imgs:
            captions_of[ann["image_id"]].append(
                (int(ann["id"]), str(ann["caption"]).strip(), caption_targets(ann, captions))
            )
        else:
            report.orphan_captions += 1
    report.without_captions = [img["id"] for img in image_entries if not captions_of[img["id"]]]
    check_image_directory(images, image_check)
    _find_bad_images(image_entries, images, image_check, report, progress)

    if report.bad_ids:
        message = f"{captions}: {report.describe()}"
        if on_bad_record == "error":
            raise DataError(message + " (data.on_bad_record=error)", report)
        logger.warning("%s; skipping them", message)
    if report.orphan_captions and not report.bad_ids:
        logger.warning("%s: %s", captions, report.describe())

    bad = set(report.bad_ids)
    records = []
    for img in image_entries:
        if img["id"] in bad:
            continue
        anns = inst.imgToAnns.get(img["id"], []) if inst is not None else []
        labels = [0] * len(categories)
        for ann in anns:
            labels[index_of[ann["category_id"]]] = 1
        records.append(
            ImageRecord(
                image_id=int(img["id"]),
                file_name=img["file_name"],
                image_uri=storage.join(images, img["file_name"]),
                width=int(img["width"]),
                height=int(img["height"]),
                captions=tuple(text for _, text, _ in captions_of[img["id"]]),
                caption_ids=tuple(caption_id for caption_id, _, _ in captions_of[img["id"]]),
                caption_targets=tuple(targets for _, _, targets in captions_of[img["id"]]),
                labels=tuple(labels),
                boxes=tuple(tuple(float(v) for v in ann["bbox"]) for ann in anns),  # type: ignore[misc]
                box_categories=tuple(index_of[ann["category_id"]] for ann in anns),
                object_count=sum(1 for ann in anns if not ann.get("iscrowd", 0)),
                covered_fraction=_covered_fraction(anns, int(img["height"]), int(img["width"])),
            )
        )
    if not records:
        raise DataError(f"{captions}: no usable images ({report.describe()})", report)
    return CocoDataset(
        records=records,
        categories=categories,
        report=report,
        captions_uri=captions,
        instances_uri=instances,
        images_uri=images,
    )
