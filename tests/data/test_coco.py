from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from mmray import storage
from mmray.data.coco import DataError, load_coco


def _mini_paths(root: Path) -> tuple[str, str, str]:
    return (
        str(root / "annotations" / "captions_train2017.json"),
        str(root / "images"),
        str(root / "annotations" / "instances_train2017.json"),
    )


def test_reads_official_coco_files(coco_mini: Path) -> None:
    captions, images, instances = _mini_paths(coco_mini)
    dataset = load_coco(captions, images, instances, image_check="decode")
    raw_caps = json.loads(Path(captions).read_text())
    raw_inst = json.loads(Path(instances).read_text())

    assert len(dataset.records) == len(raw_caps["images"]) == 80
    assert dataset.caption_count == len(raw_caps["annotations"]) == 400
    assert len(dataset.categories) == 80
    assert dataset.report.bad_ids == []

    cats_of: dict[int, set[int]] = defaultdict(set)
    count_of: dict[int, int] = defaultdict(int)
    for ann in raw_inst["annotations"]:
        cats_of[ann["image_id"]].add(ann["category_id"])
        count_of[ann["image_id"]] += 0 if ann["iscrowd"] else 1
    category_ids = sorted(c["id"] for c in raw_inst["categories"])
    for record in dataset.records:
        expected = [1 if cid in cats_of[record.image_id] else 0 for cid in category_ids]
        assert list(record.labels) == expected
        assert record.object_count == count_of[record.image_id]
        assert 0.0 <= record.covered_fraction <= 1.0
        assert (record.covered_fraction > 0) == bool(cats_of[record.image_id])
        assert len(record.captions) == 5
        assert record.image_uri == str(Path(images) / record.file_name)


def _broken_copy(coco_mini: Path, tmp_path: Path) -> tuple[str, str, str, dict[str, int]]:
    """Six coco-mini images: one file deleted, one truncated, one with its captions removed."""
    captions, images, instances = _mini_paths(coco_mini)
    raw = json.loads(Path(captions).read_text())
    keep = sorted(raw["images"], key=lambda i: i["id"])[:6]
    ids = {"missing": keep[0]["id"], "corrupt": keep[1]["id"], "uncaptioned": keep[2]["id"]}
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for entry in keep[1:]:
        shutil.copy(Path(images) / entry["file_name"], image_dir / entry["file_name"])
    corrupt = image_dir / keep[1]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[:2000])
    kept_ids = {i["id"] for i in keep}
    small = {
        "images": keep,
        "annotations": [
            a for a in raw["annotations"] if a["image_id"] in kept_ids and a["image_id"] != ids["uncaptioned"]
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(small))
    return str(tmp_path / "captions.json"), str(image_dir), instances, ids


def test_missing_corrupt_and_uncaptioned_images_are_reported(coco_mini: Path, tmp_path: Path) -> None:
    captions, images, instances, ids = _broken_copy(coco_mini, tmp_path)
    dataset = load_coco(captions, images, instances, image_check="decode", on_bad_record="skip")
    assert len(dataset.records) == 3
    assert dataset.report.missing_images == [ids["missing"]]
    assert dataset.report.unreadable_images == [ids["corrupt"]]
    assert dataset.report.without_captions == [ids["uncaptioned"]]
    assert "3 of 6 images unusable" in dataset.report.describe()

    with pytest.raises(DataError) as err:
        load_coco(captions, images, instances, image_check="decode", on_bad_record="error")
    for image_id in ids.values():
        assert str(image_id) in str(err.value)

    only_exists = load_coco(captions, images, instances, image_check="exists")
    assert len(only_exists.records) == 4
    assert only_exists.report.unreadable_images == []


def test_skipping_warns_with_ids(coco_mini: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    captions, images, instances, ids = _broken_copy(coco_mini, tmp_path)
    load_coco(captions, images, instances, image_check="decode")
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"missing image file (ids {ids['missing']})" in warning


def test_loads_from_s3(coco_mini: Path, tmp_path: Path, s3_env: str) -> None:
    captions, images, instances, ids = _broken_copy(coco_mini, tmp_path)
    storage.upload_file(captions, storage.join(s3_env, "ann", "captions.json"))
    storage.upload_file(instances, storage.join(s3_env, "ann", "instances.json"))
    storage.upload_dir(images, storage.join(s3_env, "images"))
    dataset = load_coco(
        storage.join(s3_env, "ann", "captions.json"),
        storage.join(s3_env, "images"),
        storage.join(s3_env, "ann", "instances.json"),
        image_check="decode",
    )
    assert len(dataset.records) == 3
    assert dataset.report.missing_images == [ids["missing"]]
    assert dataset.report.unreadable_images == [ids["corrupt"]]
    assert all(r.image_uri.startswith(s3_env) for r in dataset.records)


def test_not_a_coco_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match="missing keys \\['annotations'\\]"):
        load_coco(str(bad), str(tmp_path))
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_coco(str(bad), str(tmp_path))


def test_no_usable_image_is_an_error(tmp_path: Path) -> None:
    captions = tmp_path / "c.json"
    captions.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "gone.jpg", "width": 4, "height": 4}],
                "annotations": [{"id": 1, "image_id": 1, "caption": "x"}],
            }
        )
    )
    with pytest.raises(DataError, match="no usable images"):
        load_coco(str(captions), str(tmp_path))
