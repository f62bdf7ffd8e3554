"""`mmray index` in this process, without Ray, for small splits: the same shards, index bundle and
Recall@K as the Ray Data path, chosen by size (`index.runner: auto`) or asked for (`--local`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mmray.config import IndexJob
from mmray.data.sources import load_split
from mmray.retrieval.indexing import chosen_runner, run_index_job
from tests.support.cli import invoke_mmray, ray_never_started
from tests.support.serving_bundles import dual_encoder_bundle


@pytest.fixture(scope="module")
def bundle(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dual_encoder_bundle(tiny_shapes, tmp_path_factory.mktemp("bundle") / "model")


def _job(shapes: Path, runs: Path, bundle: Path, name: str, **index: Any) -> dict[str, Any]:
    val = {"captions": str(shapes / "annotations" / "captions_val.json"), "images": str(shapes / "images" / "val")}
    return {
        "kind": "index",
        "name": name,
        "storage_root": str(runs),
        "checkpoint": str(bundle),
        "data": {"source": "coco", "val": val},
        "index": {"type": "flat", "shard_size": 16, "batch_size": 8, **index},
    }


def test_a_small_index_of_val_runs_in_this_process(tiny_shapes: Path, bundle: Path, tmp_path: Path) -> None:
    job = tmp_path / "index.yaml"
    job.write_text(yaml.safe_dump(_job(tiny_shapes, tmp_path / "runs", bundle, "small")))
    with ray_never_started() as calls:
        result = invoke_mmray("index", str(job))
    assert result.returncode == 0 and not calls, result.stderr[-3000:]
    assert "embedding val in this process (no Ray; index.runner=auto)" in result.stderr
    assert "embedded images: 3 of 3 shards" in result.stderr and "embedded captions: 8 of 8 shards" in result.stderr
    summary = result.last_json()
    assert summary["sizes"] == {"images": 40, "captions": 120} and summary["failed"] == {"images": 0, "captions": 0}
    assert 0.0 <= summary["t2i_R@1"] <= summary["t2i_R@5"] <= summary["t2i_R@10"] <= 1.0
    found = invoke_mmray("search", summary["index_bundle"], "--text", "a small red circle", "--k", "3", "--json")
    assert found.returncode == 0 and [h["rank"] for h in found.last_json()["hits"]] == [1, 2, 3]


def test_auto_chooses_ray_data_beyond_the_size_or_for_more_actors(tiny_shapes: Path, bundle: Path) -> None:
    def runner(**index: Any) -> str:
        spec = IndexJob.model_validate(_job(tiny_shapes, Path("runs"), bundle, "x", **index))
        return chosen_runner(spec.index, load_split(spec.data, "val", progress=False))

    assert runner() == "local" and runner(local_max_rows=160) == "local"
    assert runner(local_max_rows=159) == "ray_data", "40 images + 120 captions"
    assert runner(local_max_rows=40, corpus=["images"]) == "local"
    assert runner(embed_actors=2) == "ray_data" and runner(gpus_per_actor=1.0) == "ray_data"
    assert runner(runner="local", embed_actors=2) == "local" and runner(runner="ray_data") == "ray_data"


def _shards(run: Path) -> dict[str, dict[str, np.ndarray]]:
    found = {}
    for shard in sorted(run.glob("embeddings/*/*/shard-*.npz")):
        with np.load(shard) as content:
            found[f"{shard.parent.name}/{shard.name}"] = {name: content[name] for name in content.files}
    return found


@pytest.mark.slow
def test_the_in_process_index_equals_the_ray_data_one(
    ray_session: None, tiny_shapes: Path, bundle: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    on_ray = run_index_job(IndexJob.model_validate(_job(tiny_shapes, runs, bundle, "ray", runner="ray_data")))
    local = run_index_job(IndexJob.model_validate(_job(tiny_shapes, runs, bundle, "local", runner="local")))
    ray_shards, local_shards = _shards(runs / "ray"), _shards(runs / "local")
    assert sorted(ray_shards) == sorted(local_shards) and len(ray_shards) == 11, "same plans, same shards"
    for name, content in ray_shards.items():
        assert np.array_equal(content["ids"], local_shards[name]["ids"]), name
        np.testing.assert_allclose(content["vectors"], local_shards[name]["vectors"], atol=1e-5)
    for plan in (runs / "ray").glob("embeddings/*/*/plan.json"):
        assert plan.read_text() == (runs / "local" / plan.relative_to(runs / "ray")).read_text()
    ray_bundle, local_bundle = Path(on_ray.index_bundle), Path(local.index_bundle)
    for name in ("metadata.json", "images.ids.npy", "captions.ids.npy"):
        assert (ray_bundle / name).read_bytes() == (local_bundle / name).read_bytes(), name
    manifests = [json.loads((path / "index.json").read_text()) for path in (ray_bundle, local_bundle)]
    assert [(m.pop("embedded_by"), m["build"].pop("runner")) for m in manifests] == [("ray_data",) * 2, ("local",) * 2]
    assert all(m.pop("created_at") for m in manifests)
    assert manifests[0] == manifests[1]
    assert on_ray.metrics == local.metrics and on_ray.sizes == local.sizes == {"images": 40, "captions": 120}
