from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray import storage
from mmray.artifacts.model_bundle import write_bundle
from mmray.config import IndexJob, TrainJob
from mmray.data.sources import load_split
from mmray.models.registry import build_model, build_processor
from mmray.retrieval.embed import finished_shards
from mmray.retrieval.evaluate import SEARCH_DEPTH
from mmray.tasks.evaluation import evaluate_bundle
from tests.support.cli import invoke_mmray
from tests.train.conftest import last_json, run_mmray, tiny_job, write_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # its commands join the session's Ray
RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_medr", "t2i_medr")


def index_job(data_root: Path, runs: Path, bundle: Path, name: str, **index: Any) -> dict[str, Any]:
    job = {
        key: value for key, value in tiny_job(data_root, runs, name).items() if key not in ("model", "task", "train")
    }
    job.update(kind="index", checkpoint=str(bundle))
    job["index"] = {"split": "val", "type": "flat", "shard_size": 32, "batch_size": 16, "runner": "ray_data", **index}
    return job


@pytest.fixture(scope="module")
def model_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A randomly initialised model bundle for the tiny shapes data (indexing needs no training)."""
    data_root = tmp_path_factory.mktemp("index-data")
    spec = TrainJob.model_validate(tiny_job(data_root, tmp_path_factory.mktemp("runs"), "model"))
    train = load_split(spec.data, "train", progress=False)
    processor = build_processor(spec.model, [c for r in train.records for c in r.captions])
    directory = tmp_path_factory.mktemp("bundle") / "model"
    write_bundle(directory, build_model(spec.model, processor), spec.model, processor, spec.task)
    return data_root, directory


def _within_search_depth(key: str, value: float) -> float | None:
    """An exact metric as an index reports it: a median rank beyond the search depth is null (not ranked)."""
    return None if key.endswith("_medr") and value > SEARCH_DEPTH else value


def test_index_job_search_and_recall_equal_exact_evaluation(model_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    data_root, bundle = model_bundle
    job = write_job(tmp_path / "index.yaml", index_job(data_root, tmp_path / "runs", bundle, "idx"))
    result = run_mmray("index", str(job))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["sizes"] == {"images": 96, "captions": 288}
    assert summary["failed"] == {"images": 0, "captions": 0}

    assert "Recall@K: the 96 images and 288 captions just embedded, queried through" in result.stderr
    assert re.search(r"embedded images: (\d+) of \1 shards", result.stderr), result.stderr[-3000:]
    assert re.search(r"embedded captions: (\d+) of \1 shards", result.stderr), result.stderr[-3000:]
    assert "logging_progress" not in result.stderr and "Running Dataset" not in result.stderr, "Ray Data's own: -v"
    exact = evaluate_bundle(IndexJob.model_validate(yaml.safe_load(job.read_text())).data, str(bundle))
    as_indexed = {k: _within_search_depth(k, exact[k]) for k in RECALL_KEYS}
    assert {k: summary[k] for k in RECALL_KEYS} == as_indexed, "from the shards, as exact"
    evaluated = invoke_mmray("evaluate", str(job), "--checkpoint", summary["index_bundle"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert {k: last_json(evaluated.stdout)[k] for k in RECALL_KEYS} == as_indexed

    index_dir = summary["index_bundle"]
    found = invoke_mmray("search", index_dir, "--text", "a small red circle at the top left", "--k", "5", "--json")
    assert found.returncode == 0, found.stderr[-3000:]
    hits = last_json(found.stdout)["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(h["kind"] == "image" and h["metadata"]["file_name"].endswith(".jpg") for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]

    image = Path(hits[0]["metadata"]["uri"])
    by_image = last_json(invoke_mmray("search", index_dir, "--image", str(image), "--k", "3", "--json").stdout)["hits"]
    assert all(h["kind"] == "caption" and "text" in h["metadata"] for h in by_image)
    sheet = tmp_path / "results.png"
    fused_query = ("--image", str(image), "--text", "but blue", "--alpha", "0.7")
    fused = invoke_mmray("search", index_dir, *fused_query, "--json", "--png", str(sheet))
    assert last_json(fused.stdout)["hits"][0]["kind"] == "image"
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {sheet}" in fused.stderr
    table = invoke_mmray("search", index_dir, "--text", "a big green square", "--k", "2")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 2


def test_search_refuses_a_model_of_another_version(model_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    data_root, bundle = model_bundle
    job = write_job(tmp_path / "index.yaml", index_job(data_root, tmp_path / "runs", bundle, "ver", corpus=["images"]))
    summary = invoke_mmray("index", str(job), "index.runner=local").last_json()  # the point: search's check
    other = tmp_path / "other-model"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**manifest, "model_version": "0" * 16}))
    refused = invoke_mmray("search", summary["index_bundle"], "--text", "x", "--model", str(other))
    assert refused.returncode == 2
    assert "was built with model version" in refused.stderr and "0000000000000000" in refused.stderr


def test_an_index_too_small_to_train_is_refused_before_embedding(
    model_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """96 images: too few for IVF-PQ's 2**8 centroids per sub-quantizer, or for 200 IVF lists."""
    data_root, bundle = model_bundle
    spec = index_job(data_root, tmp_path / "runs", bundle, "small", type="ivf_pq", runner="local")
    job = str(write_job(tmp_path / "job.yaml", spec))
    for overrides, shown in (
        ((), "error: index.type=ivf_pq needs at least 256 images to train its product quantizer (2**index.pq_bits, "
             "index.pq_bits=8), but there are 96; use index.type=auto or flat for so few, or lower index.pq_bits"),
        (("index.type=ivf_flat", "index.nlist=200"),
         "error: index.type=ivf_flat: index.nlist=200 IVF lists need at least 200 images to train, but there are 96"),
    ):  # fmt: skip
        result = invoke_mmray("index", job, *overrides)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert shown in result.stderr, result.stderr[-3000:]
        assert not (tmp_path / "runs" / "small" / "embeddings").exists(), "refused before embedding"


def test_corrupt_image_is_reported_and_skipped(model_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    data_root, bundle = model_bundle
    source = next(data_root.glob("n*"))
    copy = tmp_path / "data"
    shutil.copytree(source, copy)
    victim = sorted((copy / "images" / "val").glob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    job = index_job(data_root, tmp_path / "runs", bundle, "corrupt")
    job["data"] = {
        "source": "coco",
        "val": {k: str(copy / v) for k, v in
                {"captions": "annotations/captions_val.json", "images": "images/val"}.items()},
        "train": {"captions": str(copy / "annotations/captions_train.json"), "images": str(copy / "images/train")},
        "image_check": "exists",
    }  # fmt: skip
    # in this process: decoding is the runners' common step (on Ray Data: tests/retrieval/test_damaged_corpus.py)
    result = invoke_mmray("index", str(write_job(tmp_path / "job.yaml", job)), "index.runner=local")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["failed"] == {"images": 1, "captions": 0}
    assert summary["sizes"]["images"] == 95
    manifest = json.loads((Path(summary["index_bundle"]) / "index.json").read_text())
    assert manifest["failed"]["images"][0]["id"] == int(victim.stem)
    assert "cannot decode" in manifest["failed"]["images"][0]["error"]
    assert f"skipping image {int(victim.stem)}" in result.stderr


def test_interrupted_embedding_job_resumes_without_redoing_finished_shards(
    model_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """The state a killed job leaves: some complete shards and a half-written temporary file. Embedded in
    this process: the shard bookkeeping is the runners' common part (Ray Data's run: the first test)."""
    data_root, bundle = model_bundle
    spec = index_job(data_root, tmp_path / "runs", bundle, "resume", shard_size=16, runner="local")
    job = write_job(tmp_path / "job.yaml", spec)
    first = invoke_mmray("index", str(job))
    assert first.returncode == 0, first.stderr[-3000:]
    version = json.loads((bundle / "bundle.json").read_text())["model_version"]
    (shards,) = (tmp_path / "runs" / "resume" / "embeddings" / version).glob("captions-*")
    assert len(list(shards.glob("shard-*.npz"))) == 18
    for shard in range(5, 18):
        (shards / f"shard-{shard:05d}.npz").unlink()
    partial = shards / ".mmray-tmp-0123abcd-shard-00005.npz"
    partial.write_bytes(b"PK\x03\x04 half a shard")
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert finished_shards(str(shards)) == set(range(5)), "a half-written file is never counted as done"

    resumed = invoke_mmray("index", str(job))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "captions: 13 of 18 shards to do" in resumed.stderr
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.npz")}
    assert len(after) == 18 and not partial.exists()
    assert all(after[name] == stamp for name, stamp in kept.items()), "finished shards are not re-embedded"
    summary = last_json(resumed.stdout)
    assert summary["sizes"] == {"images": 96, "captions": 288}
    assert summary["t2i_R@1"] == last_json(first.stdout)["t2i_R@1"]


def test_index_bundle_on_s3_is_searchable(model_bundle: tuple[Path, Path], tmp_path: Path, s3_env: str) -> None:
    data_root, bundle = model_bundle
    job = index_job(data_root, tmp_path, bundle, "on-s3", corpus=["images"], type="hnsw", runner="local")
    job["storage_root"] = f"{s3_env}/runs"
    result = invoke_mmray("index", str(write_job(tmp_path / "job.yaml", job)))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["index_bundle"] == f"{s3_env}/runs/on-s3/index"
    assert summary["sizes"] == {"images": 96}
    shards = storage.list_files(f"{s3_env}/runs/on-s3/embeddings")
    assert len(shards) == 4 and all(s.endswith((".npz", "plan.json")) for s in shards)
    found = invoke_mmray("search", summary["index_bundle"], "--text", "a big green square", "--k", "4", "--json")
    assert found.returncode == 0, found.stderr[-3000:]
    assert len(last_json(found.stdout)["hits"]) == 4


def test_index_job_reads_prepared_shards_instead_of_the_images(model_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    """`mmray data prepare INDEX_JOB --shards` once, then the JPEGs overwritten: both runners embed the split
    from the shards alone, to the recall of the images themselves."""
    data_root, bundle = model_bundle
    copy = tmp_path / "data"
    shutil.copytree(next(data_root.glob("n*")), copy)
    job = index_job(data_root, tmp_path / "runs", bundle, "prepared")
    exact = evaluate_bundle(IndexJob.model_validate(job).data, str(bundle))
    job["data"] = {
        "source": "coco",
        "val": {"captions": str(copy / "annotations/captions_val.json"), "images": str(copy / "images/val")},
        "train": {"captions": str(copy / "annotations/captions_train.json"), "images": str(copy / "images/train")},
    }
    path = write_job(tmp_path / "job.yaml", job)
    shards = tmp_path / "prepared"
    prepared = invoke_mmray("data", "prepare", str(path), "--shards", str(shards))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    summary = prepared.last_json()
    assert summary["val"]["prepared"]["images"] == 96
    assert "prepared" not in summary["train"] and not (shards / "train").exists(), "only the split it indexes"
    for image in (copy / "images" / "val").glob("*.jpg"):
        image.write_bytes(f"no longer a JPEG: {image.name}".encode())  # distinct bytes: no duplicate files
    for runner, run in (("ray_data", run_mmray), ("local", invoke_mmray)):
        result = run(
            "index",
            str(path),
            f"data.prepared={shards}",
            f"index.runner={runner}",
            f"name=from-shards-{runner.replace('_', '-')}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summary = last_json(result.stdout)
        assert summary["failed"] == {"images": 0, "captions": 0}, runner
        assert summary["sizes"] == {"images": 96, "captions": 288}
        for key in RECALL_KEYS:  # the shards' order batches images otherwise: a random model's near-ties may
            close = 1.0 if key.endswith("medr") else 1.5 / 96  # break the other way: a rank, a query's share
            assert summary[key] == pytest.approx(exact[key], abs=close), (runner, key)
