from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmray import storage
from mmray.config import ShapesData
from mmray.data.coco import load_coco
from mmray.data.shapes import ensure_shapes, generate_shapes, read_summary, split_paths
from mmray.data.shapes_scenes import CELLS, COLOURS, SHAPES
from mmray.errors import DataError


def _config(root: Path | str, **changes: object) -> ShapesData:
    values = {"source": "shapes", "root": str(root), "images": 60, "val_images": 20, "seed": 3}
    return ShapesData.model_validate({**values, **changes})


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "shapes.json"):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _objects(root: Path, split: str) -> dict[int, frozenset[tuple[str, str, str, int]]]:
    raw = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    found: dict[int, set[tuple[str, str, str, int]]] = {img["id"]: set() for img in raw["images"]}
    for ann in raw["annotations"]:
        attrs = ann["attributes"]
        found[ann["image_id"]].add((names[ann["category_id"]], attrs["colour"], attrs["size"], attrs["cell"]))
    return {k: frozenset(v) for k, v in found.items()}


def test_valid_coco_readable_by_the_loader(tiny_shapes: Path) -> None:
    for split, count in (("train", 120), ("val", 40)):
        paths = split_paths(str(tiny_shapes), split)
        dataset = load_coco(paths.captions, paths.images, paths.instances, image_check="decode")
        assert len(dataset.records) == count
        assert [c.name for c in dataset.categories] == list(SHAPES)
        for record in dataset.records:
            assert (record.width, record.height) == (64, 64)
            assert len(record.captions) == 3
            assert 1 <= record.object_count <= 3
            assert sum(record.labels) >= 1
            with Image.open(record.image_uri) as image:
                assert image.format == "JPEG" and image.size == (64, 64)


def test_covered_fraction_matches_rasterised_polygons(tiny_shapes: Path) -> None:
    paths = split_paths(str(tiny_shapes), "val")
    dataset = load_coco(paths.captions, paths.images, paths.instances)
    raw = json.loads(Path(paths.instances or "").read_text())
    for record in dataset.records[:10]:
        canvas = Image.new("L", (64, 64), 0)
        for ann in raw["annotations"]:
            if ann["image_id"] == record.image_id:
                flat = ann["segmentation"][0]
                ImageDraw.Draw(canvas).polygon(list(zip(flat[::2], flat[1::2], strict=True)), fill=1)
        reference = float(np.asarray(canvas).mean())
        assert record.covered_fraction == pytest.approx(reference, abs=0.02)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = generate_shapes(_config(tmp_path), str(tmp_path / "a"))
    second = generate_shapes(_config(tmp_path), str(tmp_path / "b"))
    other = generate_shapes(_config(tmp_path, seed=4), str(tmp_path / "c"))
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")
    assert first.images == second.images == other.images == {"train": 40, "val": 20}


def test_validation_holds_unseen_combinations(tiny_shapes: Path) -> None:
    train = _objects(tiny_shapes, "train")
    val = _objects(tiny_shapes, "val")
    train_scenes = set(train.values())
    train_objects = set().union(*train.values())
    assert not any(scene in train_scenes for scene in val.values())
    assert all(scene - train_objects for scene in val.values()), "each val image has an unseen object"
    assert len(set(val.values())) == len(val), "every val scene is distinct"
    summary = read_summary(str(tiny_shapes))
    assert summary is not None and summary.val_captions_fitting_several_images == 0.0
    assert summary.heldout_objects > 0


def test_captions_describe_every_object(tiny_shapes: Path) -> None:
    objects = _objects(tiny_shapes, "val")
    raw = json.loads((tiny_shapes / "annotations" / "captions_val.json").read_text())
    size_words = {"small": ("small", "little"), "large": ("large", "big")}
    for ann in raw["annotations"]:
        text = ann["caption"]
        scene = objects[ann["image_id"]]
        assert len(re.findall("|".join(SHAPES), text)) == len(scene)
        for shape, colour, size, cell in scene:
            assert any(f"{w} {colour} {shape}" in text for w in size_words[size]), text
            assert CELLS[cell] in text or (CELLS[cell] == "centre" and "middle" in text), text
    wordings = {ann["caption"].split(" ")[0] for ann in raw["annotations"]}
    assert len(wordings) >= 3
    assert set(COLOURS) >= {c for _, c, _, _ in set().union(*objects.values())}


def test_existing_dataset_is_reused_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "out"
    generate_shapes(_config(tmp_path), str(target))
    before = _tree_digest(target)
    generate_shapes(_config(tmp_path), str(target))
    assert _tree_digest(target) == before
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_shapes(_config(tmp_path, seed=99), str(target))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a shapes dataset"):
        generate_shapes(_config(tmp_path), str(foreign))
    assert not list(tmp_path.glob(".*partial*"))


def test_ensure_generates_once_per_parameter_set(tmp_path: Path) -> None:
    summary, splits = ensure_shapes(_config(tmp_path / "root"))
    again, _ = ensure_shapes(_config(tmp_path / "root"))
    assert summary == again
    assert Path(splits["val"].captions).is_file()
    other, _ = ensure_shapes(_config(tmp_path / "root", seed=5))
    assert other.root != summary.root


def test_how_a_job_reads_the_data_is_no_generation_parameter(tmp_path: Path) -> None:
    summary, _ = ensure_shapes(_config(tmp_path / "root"))
    read_otherwise = {"captions_per_epoch": "all", "image_check": "decode", "on_bad_record": "error"}
    again, _ = ensure_shapes(_config(tmp_path / "root", **read_otherwise))
    assert again == summary


def test_generates_to_s3(s3_env: str) -> None:
    target = storage.join(s3_env, "shapes")
    summary = generate_shapes(_config(target), target)
    assert read_summary(target) == summary
    paths = split_paths(target, "val")
    dataset = load_coco(paths.captions, paths.images, paths.instances, image_check="decode")
    assert len(dataset.records) == 20


def test_a_generated_dataset_can_be_moved(tmp_path: Path) -> None:
    config = _config(tmp_path / "first")
    summary, _ = ensure_shapes(config)
    manifest = (Path(summary.root) / "shapes.json").read_text()
    assert str(tmp_path) not in manifest, "the manifest records no absolute path"
    moved = tmp_path / "second"
    shutil.move(tmp_path / "first", moved)
    again, splits = ensure_shapes(_config(moved))
    assert again.root.startswith(str(moved)) and again.params == summary.params
    assert load_coco(splits["val"].captions, splits["val"].images, splits["val"].instances).records


@pytest.mark.parametrize("damaged", ['{"params": {"seed": ', "[]", '{"params": {}}'])
def test_a_damaged_manifest_is_named(tmp_path: Path, damaged: str) -> None:
    manifest = tmp_path / "shapes.json"
    manifest.write_text(damaged)
    with pytest.raises(DataError, match=rf"^{manifest} is damaged or not what mmray wrote"):
        read_summary(str(tmp_path))
