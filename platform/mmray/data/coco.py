"""COCO-format loading; masks through pycocotools (the only module that imports it)."""

from __future__ import annotations

import json
import logging
import os
import reprlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pycocotools import mask as mask_utils

from mmray import storage
from mmray.data.coco_entries import CAPTION_FIELDS, INSTANCE_FIELDS, Fields, check_entries, entry_name, is_number
from mmray.data.duplicates import same_content_groups
from mmray.data.image_files import check_decodable, file_sizes
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

    @property
    def caption_count(self) -> int:
        return sum(len(r.captions) for r in self.records)


def _read_coco(uri: str, fields: Fields) -> dict[str, Any]:
    try:
        content = json.loads(storage.read_bytes(uri))
    except UnicodeDecodeError as exc:
        raise DataError(f"{uri}: not UTF-8 JSON ({exc})") from None
    except ValueError as exc:  # not JSON, or a number of more than 4300 digits
        raise DataError(f"{uri}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{uri}: not valid JSON (nested too deeply)") from None
    if not isinstance(content, dict):
        raise DataError(f"{uri}: expected a COCO JSON object, got {type(content).__name__}")
    missing = [key for key in fields if key not in content]
    if missing:
        raise DataError(f"{uri}: not a COCO annotation file, missing keys {missing}")
    check_entries(uri, content, fields)
    return content


def _covered_fraction(annotations: list[dict[str, Any]], height: int, width: int, uri: str) -> float:
    """Fraction of the image covered by the union of the instances' masks (boxes when no mask); a mask that
    is neither polygons nor an RLE of the image's size is a `DataError` naming the annotation."""
    if not annotations or height <= 0 or width <= 0:
        return 0.0
    rles = []
    for ann in annotations:
        segmentation = ann.get("segmentation")
        if not segmentation:
            x, y, w, h = ann["bbox"]
            segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        try:
            encoded = mask_utils.frPyObjects(segmentation, height, width)
            encoded = encoded if isinstance(encoded, list) else [encoded]
            mask_utils.area(encoded)
        except Exception as exc:  # pycocotools raises bare Exception for an unsupported input
            raise DataError(
                f"{uri}: annotation {ann['id']}: 'segmentation' is neither polygons nor an RLE "
                f"({reprlib.repr(segmentation)}: {exc})"
            ) from exc
        wrong = [rle.get("size") for rle in encoded if rle.get("size") != [height, width]]
        if wrong:
            raise DataError(
                f"{uri}: annotation {ann['id']}: 'segmentation' RLE size {wrong[0]} is not its image's "
                f"[height, width] {[height, width]}"
            )
        rles.extend(encoded)
    return float(mask_utils.area(mask_utils.merge(rles))) / float(height * width)


def caption_targets(annotation: dict[str, Any], uri: str) -> dict[str, float]:
    """The `targets` mapping of a caption annotation (name → number), checked."""
    targets = annotation.get("targets", {})
    where = f"{uri}: annotation {annotation.get('id')}"
    if not isinstance(targets, dict):
        raise DataError(f"{where}: 'targets' must be a mapping, got {targets!r}")
    checked = {}
    for name, value in targets.items():
        if name in IMAGE_TARGETS:
            raise DataError(f"{where}: target name {name!r} is reserved for images")
        if not is_number(value):
            raise DataError(f"{where}: target {name!r} must be a finite number, got {value!r}")
        checked[str(name)] = float(value)
    return checked


def _find_bad_images(
    images: list[dict[str, Any]], images_uri: str, check: str, report: LoadReport, progress: bool
) -> dict[int, tuple[str, int]]:
    """Missing (and with `check="decode"` undecodable) files into `report`; the usable files' URIs and sizes."""
    if check == "none":
        return {}
    sizes = file_sizes(images_uri, (img["file_name"] for img in images))
    report.missing_images = sorted(img["id"] for img in images if img["file_name"] not in sizes)
    files = {
        img["id"]: (storage.join(images_uri, img["file_name"]), sizes[img["file_name"]])
        for img in images
        if img["file_name"] in sizes
    }
    if check != "decode":
        return files
    by_uri: dict[str, list[int]] = defaultdict(list)
    for image_id, (uri, _) in files.items():
        by_uri[uri].append(image_id)
    checked = track(check_decodable(by_uri), "checking images", total=len(by_uri), enabled=progress)
    unreadable = {i for uri, ok in checked if not ok for i in by_uri[uri]}
    report.unreadable_images = sorted(unreadable)
    return {i: file for i, file in files.items() if i not in unreadable}


def check_image_directory(images: str, image_check: str) -> None:
    """A local image directory that does not exist is one error, not every image reported missing."""
    if image_check != "none" and not storage.is_s3(images) and not os.path.isdir(images):
        what = "is a file, not a directory" if os.path.exists(images) else "does not exist"
        raise DataError(f"image directory {images} {what}")


Caption = tuple[int, str, dict[str, float]]
"""A caption annotation's id, its text (stripped) and its targets."""


def _entries(images: list[dict[str, Any]], report: LoadReport) -> list[dict[str, Any]]:
    """The `images` entries in id order, the first of each id (later ones reported)."""
    first = {img["id"]: img for img in reversed(images)}  # the first entry of an id written last
    report.duplicate_image_ids = sorted(i for i, n in Counter(img["id"] for img in images).items() if n > 1)
    return [first[i] for i in sorted(first)]


def _captions_of(
    annotations: list[dict[str, Any]], ids: set[int], uri: str, report: LoadReport
) -> dict[int, list[Caption]]:
    """Each image's usable captions; empty ones, repeats of a caption (without targets) and captions of an
    image not in the file are reported and left out."""
    captions: dict[int, list[Caption]] = defaultdict(list)
    for ann in annotations:
        text = "" if ann.get("caption") is None else str(ann["caption"]).strip()
        targets = caption_targets(ann, uri)
        if ann["image_id"] not in ids:
            report.orphan_captions.append(int(ann["id"]))
        elif not text:
            report.empty_captions.append(int(ann["id"]))
        elif not targets and any(t == text and not g for _, t, g in captions[ann["image_id"]]):
            report.duplicate_captions.append(int(ann["id"]))
        else:
            captions[ann["image_id"]].append((int(ann["id"]), text, targets))
    for found in (report.orphan_captions, report.empty_captions, report.duplicate_captions):
        found.sort()
    return captions


def _same_files(
    files: dict[int, tuple[str, int]], captions: dict[int, list[Caption]], merge: bool, report: LoadReport
) -> None:
    """Images whose files hold the same bytes, the one kept first (the lowest id with captions). With
    `merge` each group becomes its kept image with every distinct caption."""
    report.duplicate_files = [
        tuple(sorted(group, key=lambda i: (not captions.get(i), i))) for group in same_content_groups(files)
    ]
    report.merged_files = merge and bool(report.duplicate_files)
    if not report.merged_files:
        return
    for kept, *copies in report.duplicate_files:
        texts = {text for _, text, targets in captions[kept] if not targets}
        for copy in copies:
            for caption in captions.pop(copy, []):
                if caption[2] or caption[1] not in texts:
                    captions[kept].append(caption)
                    texts.add(caption[1])


def _instances_of(
    inst: dict[str, Any] | None, ids: set[int], known: set[int], report: LoadReport
) -> dict[int, list[dict[str, Any]]]:
    """Each image's instance annotations; those of an unknown image or category, or repeating an earlier one's id,
    are reported and left out."""
    if inst is None:
        return {}
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    unknown: set[int] = set()
    seen: set[int] = set()
    for ann in inst["annotations"]:
        if ann["id"] in seen:
            report.duplicate_instances.append(int(ann["id"]))
        elif ann["image_id"] not in ids:
            report.orphan_instances.append(int(ann["id"]))
        elif ann["category_id"] not in known:
            report.unknown_categories.append(int(ann["id"]))
            unknown.add(int(ann["category_id"]))
        else:
            found[ann["image_id"]].append(ann)
        seen.add(ann["id"])
    report.unknown_categories.sort()
    report.unknown_category_ids = sorted(unknown)
    return found


def _check_sizes(uri: str, images: list[dict[str, Any]], with_instances: set[int]) -> None:
    """The kept entry of each image with instances has `width` and `height`: its masks are rasterised at that size."""
    first = {img["id"]: index for index, img in reversed(list(enumerate(images)))}
    for index in sorted(first[image_id] for image_id in with_instances):
        missing = [key for key in ("width", "height") if key not in images[index]]
        if missing:
            raise DataError(
                f"{uri}: {entry_name('images', index, images[index])}: missing key {missing[0]!r}, needed for the "
                "covered fraction of its instances"
            )


def _record(
    img: dict[str, Any],
    images: str,
    captions: list[Caption],
    anns: list[dict[str, Any]],
    index_of: dict[int, int],
    instances: str | None,
) -> ImageRecord:
    """The image's record; `width` and `height` are 0 where its entry gives none (an image without instances)."""
    present = {index_of[ann["category_id"]] for ann in anns}
    width, height = int(img.get("width", 0)), int(img.get("height", 0))
    return ImageRecord(
        image_id=int(img["id"]),
        file_name=img["file_name"],
        image_uri=storage.join(images, img["file_name"]),
        width=width,
        height=height,
        captions=tuple(text for _, text, _ in captions),
        caption_ids=tuple(caption_id for caption_id, _, _ in captions),
        caption_targets=tuple(targets for _, _, targets in captions),
        labels=tuple(int(index in present) for index in range(len(index_of))),
        boxes=tuple(tuple(float(v) for v in ann["bbox"]) for ann in anns),  # type: ignore[misc]
        box_categories=tuple(index_of[ann["category_id"]] for ann in anns),
        object_count=sum(1 for ann in anns if not ann.get("iscrowd", 0)),
        covered_fraction=_covered_fraction(anns, height, width, str(instances)),
    )


def load_coco(
    captions: str,
    images: str,
    instances: str | None = None,
    on_bad_record: Literal["skip", "error"] = "skip",
    image_check: Literal["decode", "exists", "none"] = "exists",
    progress: bool = True,
    merge_duplicate_files: bool = False,
) -> CocoDataset:
    """Read a COCO captions file (and optionally its instances file) into per-image records. Every problem of
    `LoadReport` is found (files only with an `image_check`; same-content files among those that exist and, with
    `"decode"`, decode) and reported: what it names is skipped with a warning naming the ids, or with
    `on_bad_record="error"` the split is refused with `DataError`. With `merge_duplicate_files` images whose
    files hold the same bytes become one image with all their captions."""
    if not storage.is_s3(images):
        images = os.path.abspath(images)
    caps = _read_coco(captions, CAPTION_FIELDS)
    inst = _read_coco(instances, INSTANCE_FIELDS) if instances else None
    ranked = sorted(inst["categories"], key=lambda c: c["id"]) if inst else []
    categories = [Category(c["id"], c["name"], c.get("supercategory", ""), index) for index, c in enumerate(ranked)]
    index_of = {c.id: c.index for c in categories}

    report = LoadReport()
    entries = _entries(caps["images"], report)
    report.total_images = len(entries)
    ids = {img["id"] for img in entries}
    captions_of = _captions_of(caps["annotations"], ids, captions, report)
    check_image_directory(images, image_check)
    files = _find_bad_images(entries, images, image_check, report, progress)
    _same_files(files, captions_of, merge_duplicate_files, report)
    copies = set(report.copies)
    report.without_captions = [img["id"] for img in entries if img["id"] not in copies and not captions_of[img["id"]]]
    instances_of = _instances_of(inst, ids, set(index_of), report)
    instance_source = {  # a merged image's instances: its own, else the first copy's that has any
        group[0]: next((i for i in group if instances_of.get(i)), group[0])
        for group in (report.duplicate_files if report.merged_files else [])
    }
    left_out = set(report.bad_ids) | copies
    kept = [img for img in entries if img["id"] not in left_out]
    anns_of = {img["id"]: instances_of.get(instance_source.get(img["id"], img["id"]), []) for img in kept}
    _check_sizes(captions, caps["images"], {i for i, anns in anns_of.items() if anns})

    if report.problem_count:
        message = f"{captions}: {report.describe()}"
        if on_bad_record == "error":
            raise DataError(message + " (data.on_bad_record=error)", report)
        logger.warning("%s; skipping them", message)

    records = [_record(img, images, captions_of[img["id"]], anns_of[img["id"]], index_of, instances) for img in kept]
    if not records:
        raise DataError(f"{captions}: no usable images ({report.describe()})", report)
    return CocoDataset(
        records=records,
        categories=categories,
        report=report,
        captions_uri=captions,
        instances_uri=instances,
    )
