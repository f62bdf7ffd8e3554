"""The damaged-image corpus as a split: `mmray index` embeds it on Ray Data, whose workers survive every
file and report each undecodable one by id; `mmray search --image` of a damaged or bomb file is one
`error:` line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmray.data.images import decode_rgb
from mmray.errors import ImageDecodeError
from tests.support.cli import invoke_mmray
from tests.support.damaged_images import write_captions, write_corpus
from tests.support.serving_bundles import dual_encoder_bundle
from tests.train.conftest import last_json, run_mmray, write_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # its commands join the session's Ray


@pytest.fixture(scope="module")
def indexed(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str], dict]:
    """The corpus, each refused file's id -> name, and the summary of its index job."""
    root = tmp_path_factory.mktemp("damaged-corpus")
    samples = write_corpus(root / "images")
    refused = {}
    for sample in samples:
        try:
            decode_rgb((root / "images" / sample.name).read_bytes(), sample.name)
        except ImageDecodeError:
            refused[sample.image_id] = sample.name
    split = {"captions": str(write_captions(samples, root / "captions.json")), "images": str(root / "images")}
    job = {
        "kind": "index",
        "name": "damaged",
        "storage_root": str(root / "runs"),
        "data": {"source": "coco", "train": split, "val": split, "image_check": "exists"},
        "checkpoint": str(dual_encoder_bundle(tiny_shapes, root / "model")),
        "index": {"split": "val", "type": "flat", "shard_size": 16, "batch_size": 8, "corpus": ["images"]},
    }
    result = run_mmray("index", str(write_job(root / "job.yaml", job)), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return root, refused, last_json(result.stdout)


def test_ray_data_embedding_reports_each_undecodable_file_by_id(indexed: tuple[Path, dict[int, str], dict]) -> None:
    root, refused, summary = indexed
    assert len(refused) >= 25
    assert summary["failed"]["images"] == len(refused)
    assert summary["sizes"]["images"] == len(list((root / "images").iterdir())) - len(refused)
    manifest = json.loads((Path(summary["index_bundle"]) / "index.json").read_text())
    failed = {row["id"]: row["error"] for row in manifest["failed"]["images"]}
    assert set(failed) == set(refused)
    for image_id, error in failed.items():
        assert refused[image_id] in error and "\n" not in error, error
    assert any("the limit is 40000000" in error for error in failed.values())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("one-row.png", "one-row.png: cannot decode image: its image data ends early"),
        ("bomb-40000.png", "bomb-40000.png: image is 40000×40000 = 1600000000 pixels; the limit is 40000000"),
        ("text.jpg", "text.jpg: cannot decode image: not an image file mmray can read"),
    ],
)
def test_search_by_a_damaged_image_is_one_error_line(
    indexed: tuple[Path, dict[int, str], dict], name: str, message: str
) -> None:
    root, _, summary = indexed
    image = root / "images" / name
    assert image.exists(), name
    result = invoke_mmray("search", summary["index_bundle"], "--image", str(image))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert message in lines[0], lines[0]


def test_a_corpus_of_which_nothing_embeds_is_one_error_naming_the_first_failure(
    tiny_shapes: Path, tmp_path: Path
) -> None:
    samples = write_corpus(tmp_path / "images")
    damaged = []
    for sample in samples:
        try:
            decode_rgb((tmp_path / "images" / sample.name).read_bytes(), sample.name)
        except ImageDecodeError:
            damaged.append(sample)
    split = {"captions": str(write_captions(damaged, tmp_path / "captions.json")), "images": str(tmp_path / "images")}
    job = {
        "kind": "index",
        "name": "all-damaged",
        "storage_root": str(tmp_path / "runs"),
        "data": {"source": "coco", "val": split, "image_check": "exists"},
        "checkpoint": str(dual_encoder_bundle(tiny_shapes, tmp_path / "model")),
        "index": {"split": "val", "type": "flat", "runner": "local", "corpus": ["images"]},
    }
    result = invoke_mmray("index", str(write_job(tmp_path / "job.yaml", job)))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"none of the {len(damaged)} images of split 'val' could be embedded (the first failure: " in result.stderr
    assert "Traceback" not in result.stderr
