"""Small COCO-format splits written as a person writes their own: real JPEG files and JSON annotations."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "disc", "supercategory": "shape"},
]


def jpeg_bytes(seed: int, size: int = 48) -> bytes:
    """A JPEG drawn from `seed`: a coloured background with a square and a disc (distinct seeds, distinct bytes)."""
    rng = np.random.default_rng(seed)
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    image = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(0, size // 2, 2))
    draw.rectangle((x, y, x + size // 3, y + size // 3), fill=colour())
    draw.ellipse((size // 2, size // 2, size - 2, size - 2), fill=colour())
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class CocoFiles:
    captions: Path
    instances: Path
    images: Path


def write_split(
    root: Path,
    images: list[dict[str, Any]],
    captions: list[dict[str, Any]],
    instances: list[dict[str, Any]] | None = None,
    files: dict[str, bytes] | None = None,
) -> CocoFiles:
    """`images` entries (id, file_name), caption and instance annotations, and the image files (by default one
    drawn per file name, seeded by the first id naming it) under `root`."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = [{"width": 48, "height": 48, **entry} for entry in images]
    for entry in entries:
        path = image_dir / entry["file_name"]
        if files is not None and entry["file_name"] in files:
            path.write_bytes(files[entry["file_name"]])
        elif files is None and not path.exists():
            path.write_bytes(jpeg_bytes(entry["id"]))
    paths = CocoFiles(root / "captions.json", root / "instances.json", image_dir)
    paths.captions.write_text(json.dumps({"images": entries, "annotations": captions}))
    boxes = [{"bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0, **ann} for ann in instances or []]
    paths.instances.write_text(json.dumps({"images": entries, "annotations": boxes, "categories": CATEGORIES}))
    return paths


def clean_split(root: Path, count: int = 6, captions_each: int = 2) -> CocoFiles:
    """`count` images (ids 1..count), each with `captions_each` distinct captions and one square."""
    images = [{"id": i, "file_name": f"img{i:03d}.jpg"} for i in range(1, count + 1)]
    captions = [
        {"id": i * 10 + k, "image_id": i, "caption": f"picture {i}, caption {k}"}
        for i in range(1, count + 1)
        for k in range(captions_each)
    ]
    instances = [{"id": 1000 + i, "image_id": i, "category_id": 1} for i in range(1, count + 1)]
    return write_split(root, images, captions, instances)


PROBLEMS = {
    "missing_images": [],
    "unreadable_images": [],
    "images_without_captions": [3],
    "duplicate_files": [[2, 9]],
    "duplicate_image_ids": [10],
    "empty_captions": [30, 31],
    "duplicate_captions": [41, 42],
    "orphan_captions": [900],
    "orphan_instances": [2077],
    "duplicate_instances": [2001],
    "unknown_categories": [2005],
}
"""The problems of `problem_split`, with their ids."""


def problem_split(root: Path) -> CocoFiles:
    """Ten images with every mistake people make in their own COCO files (see `PROBLEMS`): image 3's captions
    are empty, image 4 repeats a caption, image 9's file is image 2's under another name, image 10 is listed
    twice, an instance of image 5 names category 99, caption 900 and instance 2077 name image 77, instance id 2001
    is listed twice. Image 6 asks
    one question twice (annotations with targets), which is no problem."""
    images = [{"id": i, "file_name": f"img{i:03d}.jpg"} for i in range(1, 11) if i != 9]
    images += [{"id": 9, "file_name": "copy-of-2.jpg"}, {"id": 10, "file_name": "img010-again.jpg"}]
    files = {f"img{i:03d}.jpg": jpeg_bytes(i) for i in range(1, 11) if i != 9} | {"copy-of-2.jpg": jpeg_bytes(2)}
    two = [1, 2, 5, 7, 8, 10]
    captions = [{"id": i * 10 + k, "image_id": i, "caption": f"picture {i}, caption {k}"} for i in two for k in (0, 1)]
    captions += [
        {"id": 30, "image_id": 3, "caption": ""},
        {"id": 31, "image_id": 3, "caption": "   "},
        {"id": 40, "image_id": 4, "caption": "a red square"},
        {"id": 41, "image_id": 4, "caption": "a red square"},
        {"id": 42, "image_id": 4, "caption": " a red square "},
        {"id": 60, "image_id": 6, "caption": "is there a disc?", "targets": {"present": 1}},
        {"id": 61, "image_id": 6, "caption": "is there a disc?", "targets": {"present": 1}},
        {"id": 62, "image_id": 6, "caption": "a disc and a square"},
        {"id": 90, "image_id": 9, "caption": "picture 2, caption 0"},
        {"id": 91, "image_id": 9, "caption": "the same picture under another name"},
        {"id": 900, "image_id": 77, "caption": "an image that is not in the file"},
    ]
    instances = [{"id": 2000 + i, "image_id": i, "category_id": 1} for i in range(1, 11) if i != 5]
    instances += [{"id": 2005, "image_id": 5, "category_id": 99}, {"id": 2015, "image_id": 5, "category_id": 2},
                  {"id": 2077, "image_id": 77, "category_id": 1},
                  {"id": 2001, "image_id": 1, "category_id": 2}]  # fmt: skip
    return write_split(root, images, captions, instances, files)
