"""`mmray data inspect` and `data prepare` on people's own COCO files: every problem in the JSON with its
ids, and --strict's exit code and JSON agreeing (through the CLI's `main` in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.data.coco_files import PROBLEMS, CocoFiles, clean_split, problem_split, write_split
from tests.support.cli import invoke_mmray


def _inspect(paths: CocoFiles, *flags: str) -> tuple[int, dict[str, Any], str]:
    files = ("--captions", str(paths.captions), "--images", str(paths.images), "--instances", str(paths.instances))
    result = invoke_mmray("data", "inspect", *files, *flags)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.last_json(), result.stdout


def test_every_problem_is_in_the_json_with_its_ids(tmp_path: Path) -> None:
    code, summary, printed = _inspect(problem_split(tmp_path))
    assert code == 0 and summary["usable"] is True and summary["error"] is None
    assert {kind: found["ids"] for kind, found in summary["problems"].items()} == PROBLEMS
    assert {kind: found["count"] for kind, found in summary["problems"].items()} == {
        kind: len(ids) for kind, ids in PROBLEMS.items()
    }
    assert summary["problems"]["unknown_categories"]["category_ids"] == [99]
    assert summary["problem_count"] == 11
    assert "1 instance ids listed twice (annotation ids, the one kept first 2001)" in printed
    assert (summary["images"], summary["usable_images"], summary["captions"]) == (10, 8, 16)
    assert summary["images_without_captions"] == 1 and summary["orphan_captions"] == 1
    assert "2 empty or whitespace-only captions (annotation ids 30, 31)" in printed
    assert "1 image files under several ids (ids, the one kept first 2 = 9)" in printed
    assert "--merge-duplicates (in a job: data.merge_duplicate_files=true) makes each such file one image" in printed


def test_strict_makes_any_problem_unusable_in_the_json_and_the_exit_code(tmp_path: Path) -> None:
    code, summary, printed = _inspect(problem_split(tmp_path / "bad"), "--strict")
    assert code == 1
    assert summary["usable"] is False and summary["strict"] is True
    assert "--strict refuses any problem" in summary["error"] and "unusable:" in printed
    assert summary["usable_images"] == 8, "the counts stay"
    clean_code, clean, _ = _inspect(clean_split(tmp_path / "clean"), "--strict")
    assert clean_code == 0 and clean["usable"] is True and clean["error"] is None and clean["problem_count"] == 0


def test_an_image_whose_captions_are_all_empty_is_a_problem(tmp_path: Path) -> None:
    paths = write_split(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        [{"id": 1, "image_id": 1, "caption": "a square"}, {"id": 2, "image_id": 2, "caption": ""},
         {"id": 3, "image_id": 2, "caption": " \t"}],
    )  # fmt: skip
    code, summary, _ = _inspect(paths)
    assert code == 0 and summary["problem_count"] == 3
    assert summary["problems"]["empty_captions"]["ids"] == [2, 3]
    assert summary["problems"]["images_without_captions"]["ids"] == [2]
    assert summary["usable_images"] == 1 and summary["captions"] == 1
    assert _inspect(paths, "--strict")[0] == 1


def test_merge_duplicates_makes_one_image_of_a_file_under_two_ids(tmp_path: Path) -> None:
    code, summary, printed = _inspect(problem_split(tmp_path), "--merge-duplicates")
    assert code == 0 and summary["merged_files"] == 1
    assert summary["problems"]["duplicate_files"] == {"count": 0, "ids": []}
    assert summary["captions"] == 17 and summary["usable_images"] == 8
    assert "merged:            1 image files under several ids" in printed


def test_prepare_applies_the_jobs_bad_record_policy_and_merge(tmp_path: Path) -> None:
    paths = problem_split(tmp_path / "data")
    job = {
        "kind": "train",
        "name": "own",
        "data": {"source": "coco", "train": {"captions": str(paths.captions), "images": str(paths.images)}},
        "model": {"kind": "dual_encoder"},
        "task": {"kind": "retrieval"},
    }
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job))
    lenient = invoke_mmray("data", "prepare", str(spec))
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.last_json()["train"]["problem_count"] == 8, "no instances file: no unknown category"
    assert "data.merge_duplicate_files=true makes each such file one image" in lenient.stdout
    refused = invoke_mmray("data", "prepare", str(spec), "data.on_bad_record=error")
    assert refused.returncode == 1 and refused.last_json()["train"]["usable"] is False
    merged = invoke_mmray("data", "prepare", str(spec), "data.merge_duplicate_files=true")
    assert merged.returncode == 0 and merged.last_json()["train"]["merged_files"] == 1
