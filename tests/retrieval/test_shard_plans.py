"""Embedding shards are keyed by their plan: other data, another split or another model never reuse them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mmray.data.coco import load_coco
from mmray.data.shapes import split_paths
from mmray.errors import IndexBundleError
from mmray.retrieval.embed import _check_plan, _PendingShard, _write_shard, corpus_plan, read_shards, shard_uri


def _dataset(root: Path, split: str):  # type: ignore[no-untyped-def]
    paths = split_paths(str(root), split)
    return load_coco(paths.captions, paths.images, paths.instances, progress=False)


def test_plans_of_other_splits_models_or_contents_live_apart(tiny_shapes: Path) -> None:
    val, train = _dataset(tiny_shapes, "val"), _dataset(tiny_shapes, "train")
    plan = corpus_plan(val, "captions", 16, "v1")
    assert plan.directory("emb") == corpus_plan(val, "captions", 16, "v1").directory("emb"), "stable"
    others = [
        corpus_plan(train, "captions", 16, "v1"),
        corpus_plan(val, "captions", 16, "v2"),
        corpus_plan(val, "captions", 32, "v1"),
        corpus_plan(val, "images", 16, "v1"),
    ]
    assert len({plan.directory("emb"), *(o.directory("emb") for o in others)}) == 5
    edited = dataclasses.replace(plan, rows=[{**plan.rows[0], "text": "another caption"}, *plan.rows[1:]])
    assert edited.directory("emb") != plan.directory("emb"), "same ids, other text: other shards"


def test_a_directory_of_another_plan_is_refused(tiny_shapes: Path, tmp_path: Path) -> None:
    val, train = _dataset(tiny_shapes, "val"), _dataset(tiny_shapes, "train")
    plan = corpus_plan(val, "images", 16, "v1")
    _check_plan(plan, str(tmp_path))
    recorded = json.loads((tmp_path / "plan.json").read_text())
    assert recorded["digest"] == plan.digest and recorded["rows"] == 40
    _check_plan(plan, str(tmp_path))
    with pytest.raises(IndexBundleError, match=r"embeddings of another plan \(differing: digest, rows\)"):
        _check_plan(corpus_plan(train, "images", 16, "v1"), str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "ids without vectors"])
def test_a_damaged_shard_is_named(tmp_path: Path, damage: str) -> None:
    _write_shard(shard_uri(str(tmp_path), 0), _PendingShard(expected=1, ids=[1], vectors=[np.ones(4, np.float32)]), 4)
    damaged = Path(shard_uri(str(tmp_path), 1))
    if damage == "truncated":
        _write_shard(str(damaged), _PendingShard(expected=1, ids=[2], vectors=[np.ones(4, np.float32)]), 4)
        damaged.write_bytes(damaged.read_bytes()[:100])
    else:
        _write_shard(str(damaged), _PendingShard(expected=2, ids=[2, 3], vectors=[np.ones(4, np.float32)]), 4)
    with pytest.raises(IndexBundleError, match=rf"^{damaged} is damaged or not what mmray wrote"):
        read_shards(str(tmp_path), 2)


def test_a_damaged_plan_record_is_named(tiny_shapes: Path, tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text('{"digest": ')
    with pytest.raises(IndexBundleError, match=rf"^{tmp_path / 'plan.json'} is damaged or not what mmray wrote"):
        _check_plan(corpus_plan(_dataset(tiny_shapes, "val"), "images", 16, "v1"), str(tmp_path))
