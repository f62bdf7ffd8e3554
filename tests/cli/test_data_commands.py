"""`mmray data` / `config` / `evaluate` commands and their errors, through the CLI's `main` in this process
(run from the repository root, as the jobs' relative paths expect)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.cli import Outcome, invoke_mmray

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)


def run_mmray(*args: str) -> Outcome:
    return invoke_mmray(*args)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_inspect_real_coco(coco_mini: Path) -> None:
    result = run_mmray(
        "data",
        "inspect",
        "--captions",
        str(coco_mini / "annotations" / "captions_train2017.json"),
        "--instances",
        str(coco_mini / "annotations" / "instances_train2017.json"),
        "--images",
        str(coco_mini / "images"),
    )
    assert result.returncode == 0, result.stderr
    counts = last_json(result.stdout)
    assert counts["images"] == counts["usable_images"] == 80
    assert counts["captions"] == 400
    assert counts["captions_per_image_min"] == counts["captions_per_image_max"] == 5
    assert counts["categories"] == 80
    assert counts["missing_images"] == counts["unreadable_images"] == 0
    assert "images:" in result.stdout


def test_inspect_flags_bad_data(coco_mini: Path, tmp_path: Path) -> None:
    raw = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for entry in raw["images"][:3]:
        shutil.copy(coco_mini / "images" / entry["file_name"], images / entry["file_name"])
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps(raw))
    args = ("data", "inspect", "--captions", str(captions), "--images", str(images), "--no-decode")

    lenient = run_mmray(*args)
    assert lenient.returncode == 0
    assert last_json(lenient.stdout)["missing_images"] == 77
    assert run_mmray(*args, "--strict").returncode == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    unusable = run_mmray("data", "inspect", "--captions", str(captions), "--images", str(empty))
    assert unusable.returncode == 1
    assert last_json(unusable.stdout)["usable"] is False


def test_inspect_missing_annotation_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_mmray("data", "inspect", "--captions", str(tmp_path / "nope.json"), "--images", str(tmp_path))
    assert result.returncode == 2
    assert "nope.json: does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_shapes_command_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    result = run_mmray("data", "shapes", "--out", str(out), "--images", "50", "--seed", "1")
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["images"] == {"train": 45, "val": 5}
    assert (out / "annotations" / "captions_val.json").is_file()
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 45

    hint = next(line for line in result.stdout.splitlines() if "a job uses it with:" in line)
    overrides = hint.split("a job uses it with:")[1].split()
    assert f"data.root={out}" in overrides and "data.images=50" in overrides
    prepared = run_mmray("data", "prepare", "jobs/shapes-clip.yaml", *overrides)
    assert prepared.returncode == 0, prepared.stderr
    assert "generating" not in prepared.stderr and sorted(p.name for p in out.iterdir()) == sorted(
        ["annotations", "images", "shapes.json"]
    ), "the job reads the dataset in place, nothing nested"
    other = run_mmray("data", "prepare", "jobs/shapes-clip.yaml", *overrides, "data.seed=2")
    assert other.returncode == 2 and "data.seed: 1 there, 2 asked" in other.stderr

    bad = run_mmray("data", "shapes", "--out", str(tmp_path / "x"), "--images", "5", "--val-images", "9")
    assert bad.returncode == 2
    assert "val_images (9) must be smaller than images (5)" in bad.stderr


def test_prepare_generates_a_jobs_data_then_reuses_it(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "kind": "train",
                "name": "t",
                "data": {"source": "shapes", "root": str(tmp_path / "data"), "images": 40, "val_images": 10},
                "model": {"kind": "dual_encoder"},
                "task": {"kind": "retrieval"},
            }
        )
    )
    first = run_mmray("data", "prepare", str(spec))
    assert first.returncode == 0, first.stderr
    assert last_json(first.stdout)["val"]["images"] == 10
    assert "generating the shapes dataset" in first.stderr
    second = run_mmray("data", "prepare", str(spec), "data.image_check=decode")
    assert second.returncode == 0
    assert "generating" not in second.stderr
    assert last_json(second.stdout)["train"]["usable_images"] == 30


def test_config_show_and_errors(tmp_path: Path) -> None:
    shown = run_mmray("config", "show", "jobs/shapes-clip.yaml", "data.seed=4")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["data"]["seed"] == 4
    wrong = run_mmray("config", "show", "jobs/shapes-clip.yaml", "data.sede=4")
    assert wrong.returncode == 2
    assert "unknown key 'sede' (did you mean 'seed'?)" in wrong.stderr


def test_evaluate_of_a_run_that_does_not_exist(tmp_path: Path) -> None:
    result = run_mmray("evaluate", "jobs/shapes-clip.yaml", f"storage_root={tmp_path}")
    assert result.returncode == 2
    assert f"{tmp_path}/shapes-clip is not a model bundle" in result.stderr


def test_evaluate_rejects_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    result = run_mmray("evaluate", "jobs/shapes-clip.yaml", "--checkpoint", str(tmp_path))
    assert result.returncode == 2
    assert "is not a model bundle" in result.stderr


def test_commands_refuse_jobs_of_another_kind() -> None:
    for command, job, message in (
        ("index", "jobs/shapes-clip.yaml", "is a 'train' job; `mmray index` runs 'index' jobs"),
        ("train", "jobs/shapes-index.yaml", "is an 'index' job; `mmray train` runs 'train' jobs"),
    ):
        result = run_mmray(command, job)
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_inspect_names_a_missing_image_directory_once(tiny_shapes: Path, tmp_path: Path) -> None:
    captions = tiny_shapes / "annotations" / "captions_val.json"
    result = run_mmray("data", "inspect", "--captions", str(captions), "--images", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"image directory {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "missing" not in result.stdout


def test_prepare_with_decode_checks_refuses_bad_images_when_told_to(coco_mini: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(coco_mini / "images", images)
    raw = json.loads((coco_mini / "annotations" / "captions_train2017.json").read_text())
    empty, text = raw["images"][0], raw["images"][1]
    (images / empty["file_name"]).write_bytes(b"")
    (images / text["file_name"]).write_text("a text file named .jpg")
    job = {
        "kind": "train",
        "name": "bad-images",
        "storage_root": str(tmp_path / "runs"),
        "data": {
            "source": "coco",
            "train": {"captions": str(coco_mini / "annotations" / "captions_train2017.json"), "images": str(images)},
        },
        "model": {"kind": "dual_encoder"},
        "task": {"kind": "retrieval"},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    ids = f"ids {min(empty['id'], text['id'])}, {max(empty['id'], text['id'])}"

    strict = run_mmray("data", "prepare", str(path), "data.image_check=decode", "data.on_bad_record=error")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert f"2 with unreadable image ({ids}) (data.on_bad_record=error)" in strict.stdout
    assert last_json(strict.stdout)["train"]["usable"] is False

    lenient = run_mmray("data", "prepare", str(path), "data.image_check=decode")
    assert lenient.returncode == 0 and f"({ids}); skipping them" in " ".join(lenient.stderr.split())
    assert last_json(lenient.stdout)["train"]["unreadable_images"] == 2
