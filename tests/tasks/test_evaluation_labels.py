"""An evaluation split's labels are read in the order of the classes the model was trained on: its
instances file may list fewer categories, in another id order; one without labels, or with categories the
model does not know, is refused by name. Image targets need an instances file to train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmray.config import ShapesData, TrainJob
from mmray.data.coco import CocoDataset, load_coco
from mmray.data.shapes import generate_shapes, split_paths
from mmray.errors import ConfigError, DataError
from mmray.tasks.prediction import PredictTask
from mmray.train.local_run import run_local
from tests.tasks.test_prediction_task import ENCODER, _task

MULTILABEL = {"objects": {"kind": "multilabel"}}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labels") / "shapes"
    generate_shapes(ShapesData(source="shapes", images=96, val_images=32, seed=3, image_size=32), str(root))
    return root


def _split(root: Path, split: str, instances: str | None) -> CocoDataset:
    paths = split_paths(str(root), split)
    return load_coco(paths.captions, paths.images, instances, progress=False)


def _names(dataset: CocoDataset, classes: list[str]) -> list[set[str]]:
    return [{classes[k] for k, on in enumerate(r.labels) if on} for r in dataset.records]


def _subset_instances(root: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The val instances with one category dropped (with its instances) and the rest renumbered in reverse,
    so their id order is not the training split's; with the names in that order."""
    content = json.loads(Path(split_paths(str(root), "val").instances).read_text())
    dropped = content["categories"][0]["id"]
    kept = content["categories"][1:]
    new_id = {c["id"]: 100 - c["id"] for c in kept}
    content["categories"] = [{**c, "id": new_id[c["id"]]} for c in kept]
    content["annotations"] = [
        {**a, "category_id": new_id[a["category_id"]]} for a in content["annotations"] if a["category_id"] != dropped
    ]
    path = tmp_path / "instances_val_subset.json"
    path.write_text(json.dumps(content))
    return str(path), [c["name"] for c in sorted(content["categories"], key=lambda c: c["id"])]


def _bound(root: Path) -> tuple[PredictTask, list[str]]:
    train = _split(root, "train", split_paths(str(root), "train").instances)
    task = _task(MULTILABEL, texts=[c for r in train.records for c in r.captions])
    bound, model_config = task.bind(train)
    classes = bound.heads["objects"].class_names
    assert classes is not None
    return PredictTask(bound, model_config, task.processor), list(classes)


def test_val_labels_follow_the_trained_classes_by_name(shapes_root: Path, tmp_path: Path) -> None:
    task, classes = _bound(shapes_root)
    subset, subset_names = _subset_instances(shapes_root, tmp_path)
    val = _split(shapes_root, "val", subset)
    assert [c.name for c in val.categories] == subset_names != classes
    aligned = task.evaluation_split(val)
    assert [c.name for c in aligned.categories] == classes
    assert all(len(r.labels) == len(classes) for r in aligned.records)
    assert _names(aligned, classes) == _names(val, subset_names)
    same = _split(shapes_root, "val", split_paths(str(shapes_root), "val").instances)
    assert task.evaluation_split(same) is same


def test_val_labels_that_cannot_be_read_as_the_trained_classes_are_refused(shapes_root: Path, tmp_path: Path) -> None:
    task, _ = _bound(shapes_root)
    with pytest.raises(DataError, match=r"head 'objects' reads category labels, .* no instances file"):
        task.evaluation_split(_split(shapes_root, "val", None))
    content = json.loads(Path(split_paths(str(shapes_root), "val").instances).read_text())
    content["categories"] = [*content["categories"][:2], {"id": 99, "name": "hexagon", "supercategory": "shape"}]
    content["annotations"] = [a for a in content["annotations"] if a["category_id"] in (1, 2)]
    other = tmp_path / "instances_other.json"
    other.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"categories \['hexagon'\] are not among the .* the model was trained on"):
        task.evaluation_split(_split(shapes_root, "val", str(other)))


def test_an_image_target_needs_an_instances_file(shapes_root: Path) -> None:
    train = _split(shapes_root, "train", None)
    for target in ("object_count", "covered_fraction"):
        with pytest.raises(ConfigError, match=f"head 'h': target '{target}' .* no instances file"):
            _task({"h": {"kind": "regression", "target": target}}).bind(train)


def test_training_evaluates_a_val_split_whose_instances_list_fewer_categories(
    shapes_root: Path, tmp_path: Path
) -> None:
    subset, _ = _subset_instances(shapes_root, tmp_path)
    train, val = split_paths(str(shapes_root), "train"), split_paths(str(shapes_root), "val")
    job = {
        "kind": "train",
        "name": "subset-val",
        "storage_root": str(tmp_path / "runs"),
        "data": {
            "source": "coco",
            "train": {"captions": train.captions, "images": train.images, "instances": train.instances},
            "val": {"captions": val.captions, "images": val.images, "instances": subset},
        },
        "model": {"kind": "fusion", "encoder": ENCODER.model_dump(), "fusion": {"kind": "gated"}},
        "task": {"kind": "predict", "heads": MULTILABEL},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 1},
    }
    outcome = run_local(TrainJob.model_validate(job))
    assert outcome.metrics["epoch"] == 1 and "objects_mAP" in outcome.metrics
