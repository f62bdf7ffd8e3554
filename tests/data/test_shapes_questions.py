"""The shapes question split: right answers, balanced by construction, chance levels reported, and
the answers loaded as caption targets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from mmray.config import ShapesData
from mmray.data.coco import load_coco
from mmray.data.processor import ImageTransform, Processor
from mmray.data.shapes import generate_shapes, split_paths
from mmray.data.shapes_scenes import CELLS
from mmray.data.tensors import split_to_tensors, tensors_from_arrays, tensors_to_arrays
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import DataError
from tests.data.test_shapes import _objects

Object = tuple[str, str, str, int]


@pytest.fixture(scope="module")
def questions_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("questions") / "shapes"
    config = ShapesData(source="shapes", images=700, val_images=100, seed=5, presence_questions_per_image=3)
    generate_shapes(config, str(root))
    return root


def _questions(root: Path, split: str) -> list[dict]:
    return json.loads((root / "annotations" / f"questions_{split}.json").read_text())["annotations"]


def _matches(obj: Object, attributes: dict) -> bool:
    shape, colour, size, cell = obj
    actual = {"shape": shape, "colour": colour, "size": size, "cell": CELLS[cell]}
    return all(actual[name] == value for name, value in attributes.items())


def test_every_answer_agrees_with_the_drawn_objects(questions_root: Path) -> None:
    objects = _objects(questions_root, "train")
    questions = _questions(questions_root, "train")
    assert Counter(q["question"]["kind"] for q in questions) == {"present": 1800, "count": 1200}
    for q in questions:
        matching = sum(_matches(obj, q["question"]["attributes"]) for obj in objects[q["image_id"]])
        if q["question"]["kind"] == "present":
            assert q["targets"] == {"present": int(matching > 0)}, q["caption"]
        else:
            assert q["targets"] == {"count": matching}, q["caption"]


def test_presence_is_balanced_and_neither_modality_alone_predicts_it(questions_root: Path) -> None:
    objects = _objects(questions_root, "train")
    presence = [q for q in _questions(questions_root, "train") if q["question"]["kind"] == "present"]
    yes = [q for q in presence if q["targets"]["present"]]
    assert abs(len(yes) / len(presence) - 0.5) < 0.04
    # the image alone: the yes-share is the same whatever the number of objects
    for count in (1, 2, 3):
        answers = [q["targets"]["present"] for q in presence if len(objects[q["image_id"]]) == count]
        assert abs(sum(answers) / len(answers) - 0.5) < 0.08, f"{count} objects"
    # the text alone: each kind of question (which attributes it names) is asked as often for yes as for no
    kinds = Counter((tuple(sorted(q["question"]["attributes"])), q["targets"]["present"]) for q in presence)
    for names in {names for names, _ in kinds}:
        share = kinds[(names, 1)] / (kinds[(names, 0)] + kinds[(names, 1)])
        assert abs(share - 0.5) < 0.15, names


def test_the_manifest_reports_the_chance_levels(questions_root: Path) -> None:
    manifest = json.loads((questions_root / "shapes.json").read_text())
    chance = manifest["question_chance"]["val"]
    answers = [q["targets"]["present"] for q in _questions(questions_root, "val") if "present" in q["targets"]]
    share = sum(answers) / len(answers)
    assert chance["present"]["chance_accuracy"] == pytest.approx(max(share, 1 - share))
    counts = [q["targets"]["count"] for q in _questions(questions_root, "val") if "count" in q["targets"]]
    assert chance["count"]["mean"] == pytest.approx(sum(counts) / len(counts))
    assert manifest["questions"] == {"train": 3000, "val": 500}


def test_question_answers_load_as_caption_targets(questions_root: Path) -> None:
    paths = split_paths(str(questions_root), "val", "questions")
    dataset = load_coco(paths.captions, paths.images, paths.instances, progress=False)
    texts = [c for r in dataset.records for c in r.captions]
    processor = Processor(ImageTransform(32, (0.5,) * 3, (0.5,) * 3), WordTokenizer.build(texts, max_length=16))
    tensors = split_to_tensors(dataset, processor, progress=False)
    present, count = tensors.caption_targets["present"], tensors.caption_targets["count"]
    assert tensors.num_captions == 500
    assert int((~present.isnan()).sum()) == 300 and int((~count.isnan()).sum()) == 200
    assert bool((present.isnan() ^ count.isnan()).all()), "each question has exactly one of the two answers"
    again = tensors_from_arrays(tensors_to_arrays(tensors))
    assert torch.equal(again.caption_targets["count"].nan_to_num(-1), count.nan_to_num(-1))


def test_a_non_numeric_target_is_an_error_naming_the_annotation(questions_root: Path, tmp_path: Path) -> None:
    paths = split_paths(str(questions_root), "val", "questions")
    content = json.loads(Path(paths.captions).read_text())
    content["annotations"][3]["targets"] = {"present": "yes"}
    broken = tmp_path / "questions.json"
    broken.write_text(json.dumps(content))
    with pytest.raises(
        DataError, match=rf"annotation {content['annotations'][3]['id']}: target 'present' must be a finite number"
    ):
        load_coco(str(broken), paths.images, progress=False)
