"""What people's own COCO files get wrong, found while loading (through pycocotools): each problem counted
with its ids, what it names left out (or the split refused), duplicate files merged when asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mmray.data.coco import CocoDataset, load_coco
from mmray.errors import DataError
from tests.data.coco_files import PROBLEMS, clean_split, jpeg_bytes, problem_split, write_split


def _load(root: Path, **options: Any) -> CocoDataset:
    paths = problem_split(root)
    return load_coco(str(paths.captions), str(paths.images), str(paths.instances), progress=False, **options)


def test_every_problem_is_counted_with_its_ids_and_left_out(tmp_path: Path) -> None:
    dataset = _load(tmp_path)
    report = dataset.report
    assert report.problems() == PROBLEMS
    assert report.problem_count == 11
    assert report.unknown_category_ids == [99]
    assert report.total_images == 10, "image 10 counts once"
    by_id = {r.image_id: r for r in dataset.records}
    assert sorted(by_id) == [1, 2, 4, 5, 6, 7, 8, 10], "3 has no caption left, 9 is a copy of 2's file"
    assert by_id[4].captions == ("a red square",)
    assert by_id[6].caption_ids == (60, 61, 62), "a question asked twice is no duplicate"
    assert by_id[10].captions == ("picture 10, caption 0", "picture 10, caption 1")
    assert by_id[10].file_name == "img010.jpg", "the first entry of an id is kept"
    assert by_id[5].labels == (0, 1) and by_id[5].box_categories == (1,), "category 99 left out"
    assert by_id[1].labels == (1, 0) and by_id[1].box_categories == (0,), "the first instance 2001 kept"
    assert dataset.caption_count == 16
    assert all(text.strip() for r in dataset.records for text in r.captions)
    assert report.usable_images == len(dataset.records) == 8


def test_the_warning_names_every_problem(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _load(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for text in (
        "2 of 10 images unusable",
        "1 with no captions (ids 3)",
        "1 image files under several ids (ids 2 = 9",
        "data.merge_duplicate_files=true",
        "image ids listed more than once in 'images' (the first entry kept; ids 10)",
        "2 empty or whitespace-only captions (annotation ids 30, 31)",
        "2 captions repeating another of their image's (annotation ids 41, 42)",
        "1 captions naming an image id not in the file (annotation ids 900)",
        "1 instances naming an image id not in the file (annotation ids 2077)",
        "1 instance ids listed more than once (the first kept; annotation ids 2001)",
        "(category ids 99; annotation ids 2005)",
        "skipping them",
    ):
        assert text in warning, (text, warning)


def test_on_bad_record_error_refuses_any_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\(data.on_bad_record=error\)") as refused:
        _load(tmp_path, on_bad_record="error")
    assert refused.value.report.problems() == PROBLEMS
    only_empty = write_split(
        tmp_path / "empty",
        [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        [{"id": 1, "image_id": 1, "caption": "a caption"}, {"id": 2, "image_id": 2, "caption": " "},
         {"id": 3, "image_id": 2, "caption": "another"}],
    )  # fmt: skip
    with pytest.raises(DataError, match=r"1 empty or whitespace-only captions \(annotation ids 2\)"):
        load_coco(str(only_empty.captions), str(only_empty.images), on_bad_record="error", progress=False)


def test_duplicate_files_merge_into_one_image_with_all_their_captions(tmp_path: Path) -> None:
    dataset = _load(tmp_path, merge_duplicate_files=True)
    report = dataset.report
    assert report.merged_files and report.duplicate_files == [(2, 9)]
    assert report.problems()["duplicate_files"] == [] and report.problem_count == 10
    by_id = {r.image_id: r for r in dataset.records}
    assert 9 not in by_id
    assert by_id[2].caption_ids == (20, 21, 91), "9's caption equal to one of 2's is not repeated"
    assert by_id[2].labels == (1, 0)
    assert report.usable_images == len(dataset.records) == 8
    assert "merged: 1 image files under several ids (2 = 9)" in report.describe()


def test_one_file_named_by_two_ids_and_copies_without_captions(tmp_path: Path) -> None:
    paths = write_split(
        tmp_path,
        [{"id": 5, "file_name": "x.jpg"}, {"id": 3, "file_name": "x.jpg"}, {"id": 8, "file_name": "y.jpg"},
         {"id": 9, "file_name": "z.jpg"}],
        [{"id": 1, "image_id": 5, "caption": "x"}, {"id": 2, "image_id": 8, "caption": "y"},
         {"id": 3, "image_id": 9, "caption": "z"}],
        files={"x.jpg": jpeg_bytes(1), "y.jpg": jpeg_bytes(2), "z.jpg": jpeg_bytes(2)},
    )  # fmt: skip
    dataset = load_coco(str(paths.captions), str(paths.images), progress=False)
    assert dataset.report.duplicate_files == [(5, 3), (8, 9)], "the id with captions is kept first"
    assert dataset.report.without_captions == [], "3 is a copy of 5, counted once"
    assert [r.image_id for r in dataset.records] == [5, 8]
    unchecked = load_coco(str(paths.captions), str(paths.images), image_check="none", progress=False)
    assert unchecked.report.duplicate_files == [] and unchecked.report.without_captions == [3]


def test_equal_sizes_alone_are_no_duplicates(tmp_path: Path) -> None:
    first = jpeg_bytes(1)
    second = first[:200] + bytes([first[200] ^ 1]) + first[201:]
    paths = write_split(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        [{"id": 1, "image_id": 1, "caption": "a"}, {"id": 2, "image_id": 2, "caption": "b"}],
        files={"a.jpg": first, "b.jpg": second},
    )
    dataset = load_coco(str(paths.captions), str(paths.images), progress=False)
    assert dataset.report.duplicate_files == [] and len(dataset.records) == 2


def test_a_clean_split_and_real_coco_have_no_problems(tmp_path: Path, coco_mini: Path) -> None:
    clean = clean_split(tmp_path / "clean")
    dataset = load_coco(str(clean.captions), str(clean.images), str(clean.instances), on_bad_record="error")
    assert dataset.report.problem_count == 0 and len(dataset.records) == 6
    annotations = coco_mini / "annotations"
    real = load_coco(
        str(annotations / "captions_train2017.json"), str(coco_mini / "images"), on_bad_record="error", progress=False
    )
    assert real.report.problem_count == 0 and len(real.records) == 80


def test_real_coco_with_an_image_listed_twice_counts_it_once(tmp_path: Path, coco_mini: Path) -> None:
    raw = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    images = sorted(raw["images"], key=lambda i: i["id"])[:40]
    ids = {i["id"] for i in images}
    small = {"images": [*images, images[7]], "annotations": [a for a in raw["annotations"] if a["image_id"] in ids]}
    (tmp_path / "captions.json").write_text(json.dumps(small))
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for entry in images:
        shutil.copy(coco_mini / "images" / entry["file_name"], image_dir / entry["file_name"])
    dataset = load_coco(str(tmp_path / "captions.json"), str(image_dir), progress=False)
    assert len(dataset.records) == 40 and dataset.report.total_images == 40
    assert dataset.caption_count == len(small["annotations"])
    assert dataset.report.duplicate_image_ids == [images[7]["id"]]
