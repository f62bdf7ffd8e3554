"""COCO entries lacking the keys they are read by, or holding the wrong kind of value: one `DataError` naming
the file, the section, the entry and the key (never a `KeyError` from pycocotools or the loader); `width` and
`height` are needed only for images with instances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmray.data.coco import load_coco
from mmray.errors import DataError
from tests.data.coco_files import CocoFiles, clean_split
from tests.support.cli import invoke_mmray


def _edit(path: Path, section: str, index: int, drop: str | None = None, **values: Any) -> None:
    content = json.loads(path.read_text())
    entry = content[section][index]
    if drop is not None:
        del entry[drop]
    entry.update(values)
    path.write_text(json.dumps(content))


def _load(paths: CocoFiles, instances: bool = True) -> None:
    load_coco(str(paths.captions), str(paths.images), str(paths.instances) if instances else None, progress=False)


def test_captions_only_images_need_no_width_or_height(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    _edit(paths.captions, "images", 2, drop="width")
    _edit(paths.captions, "images", 4, drop="height")
    dataset = load_coco(str(paths.captions), str(paths.images), progress=False)
    assert len(dataset.records) == 6 and dataset.report.problem_count == 0
    by_id = {r.image_id: r for r in dataset.records}
    assert (by_id[1].width, by_id[1].height) == (48, 48)
    assert (by_id[3].width, by_id[5].height) == (0, 0), "unknown"
    assert by_id[3].captions == ("picture 3, caption 0", "picture 3, caption 1")


def test_an_image_with_instances_needs_its_size(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    _edit(paths.captions, "images", 2, drop="width")
    with pytest.raises(DataError, match=r"captions\.json: images\[2\] \(id 3\): missing key 'width'.*instances"):
        _load(paths)


@pytest.mark.parametrize(
    ("file", "section", "index", "key", "shown"),
    [
        ("captions", "images", 1, "id", r"images\[1\]: missing key 'id'"),
        ("captions", "images", 1, "file_name", r"images\[1\] \(id 2\): missing key 'file_name'"),
        ("captions", "annotations", 3, "id", r"annotations\[3\]: missing key 'id'"),
        ("captions", "annotations", 3, "image_id", r"annotations\[3\] \(id 21\): missing key 'image_id'"),
        ("instances", "images", 0, "id", r"images\[0\]: missing key 'id'"),
        ("instances", "annotations", 2, "category_id", r"annotations\[2\] \(id 1003\): missing key 'category_id'"),
        ("instances", "annotations", 2, "bbox", r"annotations\[2\] \(id 1003\): missing key 'bbox'"),
        ("instances", "categories", 1, "id", r"categories\[1\]: missing key 'id'"),
        ("instances", "categories", 1, "name", r"categories\[1\] \(id 2\): missing key 'name'"),
    ],
)
def test_a_missing_key_names_file_section_entry_and_key(
    tmp_path: Path, file: str, section: str, index: int, key: str, shown: str
) -> None:
    paths = clean_split(tmp_path)
    path = paths.captions if file == "captions" else paths.instances
    _edit(path, section, index, drop=key)
    with pytest.raises(DataError, match=rf"{path.name}: {shown}"):
        _load(paths)


@pytest.mark.parametrize(
    ("section", "index", "values", "shown"),
    [
        ("images", 0, {"id": "one"}, r"images\[0\]: 'id' must be an integer, got 'one'"),
        ("images", 0, {"id": [1]}, r"images\[0\]: 'id' must be an integer, got \[1\]"),
        (
            "images",
            0,
            {"file_name": None},
            r"images\[0\] \(id 1\): 'file_name' must be a path inside the images folder",
        ),
        ("images", 0, {"width": "wide"}, r"images\[0\] \(id 1\): 'width' must be a positive number, got 'wide'"),
        ("annotations", 0, {"image_id": {"a": 1}}, r"annotations\[0\] \(id 10\): 'image_id' must be an integer"),
        ("annotations", 0, {"caption": ["x", 3]}, r"annotations\[0\] \(id 10\): 'caption' must be a string or null"),
        ("annotations", 0, {"targets": {"answer": float("nan")}}, r"annotation 10: target 'answer' must be a finite"),
        ("annotations", 0, {"targets": {"answer": float("inf")}}, r"annotation 10: target 'answer' must be a finite"),
    ],
)
def test_a_wrong_value_names_file_section_entry_and_key(
    tmp_path: Path, section: str, index: int, values: dict[str, Any], shown: str
) -> None:
    paths = clean_split(tmp_path)
    _edit(paths.captions, section, index, **values)
    with pytest.raises(DataError, match=rf"captions\.json: {shown}"):
        _load(paths)


@pytest.mark.parametrize("file_name", ["../outside.jpg", "sub/../../outside.jpg", "{outside}", "sub/./../.."])
def test_a_file_name_leading_out_of_the_images_folder_is_refused(tmp_path: Path, file_name: str) -> None:
    paths = clean_split(tmp_path)
    outside = paths.images.parent / "outside.jpg"
    outside.write_bytes((paths.images / "img001.jpg").read_bytes())
    _edit(paths.captions, "images", 0, file_name=file_name.format(outside=outside))
    with pytest.raises(DataError, match=r"captions\.json: images\[0\] \(id 1\): 'file_name' must be a path inside "):
        _load(paths)


def test_a_file_name_in_a_subfolder_of_the_images_folder_loads(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    (paths.images / "sub").mkdir()
    (paths.images / "img001.jpg").rename(paths.images / "sub" / "one.jpg")
    _edit(paths.captions, "images", 0, file_name="sub/one.jpg")
    dataset = load_coco(str(paths.captions), str(paths.images), progress=False)
    assert dataset.report.problem_count == 0
    assert {r.image_id: r.file_name for r in dataset.records}[1] == "sub/one.jpg"


@pytest.mark.parametrize(
    ("segmentation", "shown"),
    [
        ("abc", r"'segmentation' is neither polygons nor an RLE \('abc'"),
        ([["a", 2, 3, 4, 5, 6]], r"'segmentation' is neither polygons nor an RLE"),
        ({"counts": [1, 2], "size": [10, 10]}, r"'segmentation' RLE size \[10, 10\] is not its image's"),
    ],
)
def test_a_mask_that_cannot_be_read_names_its_annotation(tmp_path: Path, segmentation: Any, shown: str) -> None:
    paths = clean_split(tmp_path)
    _edit(paths.instances, "annotations", 0, segmentation=segmentation)
    with pytest.raises(DataError, match=rf"instances\.json: annotation 1001: {shown}"):
        _load(paths)


def test_a_category_id_listed_twice_is_refused(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    content = json.loads(paths.instances.read_text())
    content["categories"].append({"id": content["categories"][0]["id"], "name": "another"})
    paths.instances.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"instances\.json: categories\[\d+\] \(id 1\): id 1 is listed more than once"):
        _load(paths)


def test_sections_and_entries_of_the_wrong_shape(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    content = json.loads(paths.captions.read_text())
    paths.captions.write_text(json.dumps({**content, "images": {"id": 1}}))
    with pytest.raises(DataError, match=r"captions\.json: 'images' must be a list of entries, got dict"):
        _load(paths)
    paths.captions.write_text(json.dumps({**content, "annotations": [*content["annotations"], "a caption"]}))
    with pytest.raises(DataError, match=r"captions\.json: annotations\[12\] must be a JSON object, got str"):
        _load(paths)


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ('{"images": [{"id": 1, "file_name": "é.jpg"}]}'.encode("latin-1"), "not UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, r"not valid JSON \(nested too deeply\)"),
        (b'{"images": [{"id": ' + b"9" * 5000 + b"}]}", "not valid JSON"),
    ],
)
def test_an_unreadable_file_is_named(tmp_path: Path, content: bytes, shown: str) -> None:
    paths = clean_split(tmp_path)
    paths.captions.write_bytes(content)
    with pytest.raises(DataError, match=rf"captions\.json: {shown}"):
        _load(paths)


def test_inspect_reports_a_missing_key_in_its_json_without_a_traceback(tmp_path: Path) -> None:
    paths = clean_split(tmp_path)
    _edit(paths.captions, "annotations", 3, drop="id")
    result = invoke_mmray("data", "inspect", "--captions", str(paths.captions), "--images", str(paths.images))
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr, result.stderr
    summary = result.last_json()
    assert result.returncode == 1 and summary["usable"] is False
    assert "annotations[3]: missing key 'id'" in summary["error"]
    _edit(paths.captions, "annotations", 3, id=21)
    _edit(paths.captions, "images", 0, drop="width")
    result = invoke_mmray("data", "inspect", "--captions", str(paths.captions), "--images", str(paths.images))
    assert result.returncode == 0 and result.last_json()["usable"] is True, result.stderr


def test_a_captions_file_that_lists_categories_loads(tmp_path: Path) -> None:
    """Some exports copy the `categories` list into the captions file, whose annotations have no category."""
    paths = clean_split(tmp_path)
    content = json.loads(paths.captions.read_text())
    content["categories"] = json.loads(paths.instances.read_text())["categories"]
    paths.captions.write_text(json.dumps(content))
    dataset = load_coco(str(paths.captions), str(paths.images), str(paths.instances), progress=False)
    assert len(dataset.records) == 6 and dataset.report.problem_count == 0
