from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmray import storage
from mmray.artifacts.index_bundle import IndexBundleError, load_index_bundle, write_index_bundle
from mmray.errors import ConfigError, QueryError
from mmray.index import faiss_index
from mmray.index.faiss_index import GPU_MAX_NPROBE, IndexSpec, VectorIndex, build_index, check_gpu_nprobe


def clustered(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    vectors = centres[rng.integers(50, size=count)] + 0.5 * rng.standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    base = clustered(6000, 64, seed=0)
    queries = clustered(200, 64, seed=1)
    ids = np.arange(6000, dtype=np.int64) * 7 + 1000
    exact = ids[np.argsort(-(queries @ base.T), axis=1)[:, :10]]
    return base, queries, ids, exact


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))


@pytest.mark.parametrize(("kind", "minimum"), [("flat", 1.0), ("ivf_flat", 0.95), ("hnsw", 0.95), ("ivf_pq", 0.5)])
def test_index_types_against_brute_force(data: tuple, kind: str, minimum: float) -> None:
    base, queries, ids, exact = data
    index = build_index(base, ids, IndexSpec(type=kind, pq_m=16, train_sample=2000))
    scores, found = index.search(queries, 10)
    assert index.kind == kind and index.size == 6000
    assert set(np.unique(found)) <= set(ids)
    assert recall(found, exact) >= minimum
    assert np.all(np.diff(scores, axis=1) <= 1e-5), "results come best first"
    if kind == "flat":
        np.testing.assert_array_equal(found, exact)
        np.testing.assert_allclose(scores[:, 0], np.max(queries @ base.T, axis=1), rtol=1e-5)


def test_query_time_parameters_trade_recall(data: tuple) -> None:
    base, queries, ids, exact = data
    index = build_index(base, ids, IndexSpec(type="ivf_flat", nlist=64))
    default = recall(index.search(queries, 10)[1], exact)
    narrow = recall(index.search(queries, 10, nprobe=1)[1], exact)
    assert recall(index.search(queries, 10, nprobe=64)[1], exact) == 1.0 > narrow
    assert recall(index.search(queries, 10)[1], exact) == default, "a per-call nprobe leaves the index as it was"
    with pytest.raises(ValueError, match="nprobe must be at least 1, got -3"):
        index.search(queries, 10, nprobe=-3)
    assert index.gpu_index is None, "faiss-cpu: searched on the CPU index"
    check_gpu_nprobe(GPU_MAX_NPROBE)
    with pytest.raises(QueryError, match=r"nprobe 4096 is more than faiss's GPU indexes search \(2048\)"):
        check_gpu_nprobe(4096)


def test_a_breadth_beyond_the_index_searches_as_the_whole_index_does(data: tuple) -> None:
    base, queries, ids, _ = data
    ivf = build_index(base[:2000], ids[:2000], IndexSpec(type="ivf_flat", nlist=16))
    everything = ivf.search(queries, 10, nprobe=16)
    for huge in (17, 2**40, 2**64):  # faiss takes a size_t: 2**64 overflowed
        np.testing.assert_array_equal(ivf.search(queries, 10, nprobe=huge)[1], everything[1])
    hnsw = build_index(base[:500], ids[:500], IndexSpec(type="hnsw"))
    widest = hnsw.search(queries, 10, ef_search=500)
    for huge in (501, 3_000_000_000):  # an int: 3e9 overflowed, 1e8 took 0.8 GB
        np.testing.assert_array_equal(hnsw.search(queries, 10, ef_search=huge)[1], widest[1])


def test_auto_rule_and_errors(data: tuple) -> None:
    assert IndexSpec().resolved_type(1000) == "flat"
    assert IndexSpec().resolved_type(500_000) == "ivf_flat"
    assert IndexSpec().resolved_type(5_000_000) == "ivf_pq"
    base, queries, ids, _ = data
    index = build_index(base[:100], ids[:100], IndexSpec())
    assert index.kind == "flat"
    assert index.search(queries[:2], 500)[1].shape == (2, 100)
    with pytest.raises(ValueError, match="dimension 32, the index has 64"):
        index.search(queries[:, :32], 5)
    with pytest.raises(ValueError, match="pq_m=48 must divide"):
        build_index(base, ids, IndexSpec(type="ivf_pq", pq_m=48))
    with pytest.raises(ValueError, match="unknown index type"):
        build_index(base, ids, IndexSpec(type="lsh"))


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (
            IndexSpec(type="ivf_pq", pq_m=16),
            r"index\.type=ivf_pq needs at least 256 vectors to train its product quantizer \(2\*\*index\.pq_bits, "
            r"index\.pq_bits=8\), but there are 26; use index\.type=auto or flat for so few, or lower index\.pq_bits",
        ),
        (
            IndexSpec(type="ivf_flat", nlist=64),
            r"index\.nlist=64 IVF lists need at least 64 vectors to train, but there are 26; lower index\.nlist "
            r"\(unset, it is about √n\), or use index\.type=auto or flat",
        ),
        (IndexSpec(type="ivf_pq", pq_m=16, pq_bits=4, nlist=27), r"index\.nlist=27 IVF lists need at least 27"),
    ],
)
def test_too_few_vectors_to_train_is_a_config_error(data: tuple, spec: IndexSpec, shown: str) -> None:
    base, _, ids, _ = data
    with pytest.raises(ConfigError, match=shown):
        build_index(base[:26], ids[:26], spec)
    with pytest.raises(ConfigError, match=shown.replace("vectors", "captions")):
        faiss_index.check_trainable(spec, 26, "captions")


def test_just_enough_vectors_to_train(data: tuple) -> None:
    base, queries, ids, _ = data
    assert build_index(base[:26], ids[:26], IndexSpec(type="ivf_flat", nlist=26)).size == 26
    assert build_index(base[:26], ids[:26], IndexSpec(type="ivf_pq", pq_m=16, pq_bits=4)).kind == "ivf_pq"
    small_sample = IndexSpec(type="ivf_pq", pq_m=16, pq_bits=12, nlist=4, train_sample=1000)
    assert build_index(base, ids, small_sample).search(queries[:1], 3)[1].shape == (1, 3), "trained on 4096"
    faiss_index.check_trainable(IndexSpec(type="ivf_pq"), 256, "images")


def _bundle(base: np.ndarray, ids: np.ndarray) -> dict[str, VectorIndex]:
    return {
        "images": build_index(base[:300], ids[:300], IndexSpec(type="hnsw")),
        "captions": build_index(base[300:900], ids[300:900], IndexSpec(type="flat")),
    }


@pytest.mark.parametrize("where", ["local", "s3"])
def test_bundle_round_trip(data: tuple, where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    base, queries, ids, _ = data
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_env")
    uri = storage.join(root, "bundles", "index")
    indexes = _bundle(base, ids)
    metadata = {
        "images": {str(i): {"file_name": f"{i}.jpg"} for i in ids[:300]},
        "captions": {str(i): {"text": f"caption {i}"} for i in ids[300:900]},
    }
    write_index_bundle(uri, indexes, metadata, {"model_version": "v1", "model_bundle": "m", "split": "val"})
    loaded = load_index_bundle(uri)
    assert loaded.model_version == "v1" and loaded.metadata == metadata
    assert {k: (v.kind, v.size) for k, v in loaded.indexes.items()} == {
        "images": ("hnsw", 300),
        "captions": ("flat", 600),
    }
    for kind, index in indexes.items():
        np.testing.assert_array_equal(loaded.indexes[kind].search(queries, 5)[1], index.search(queries, 5)[1])
    loaded.check_model("v1")
    with pytest.raises(IndexBundleError, match="built with model version v1, but the model given has version v2"):
        loaded.check_model("v2")

    write_index_bundle(uri, indexes, metadata, {"model_version": "v3", "model_bundle": "m", "split": "val"})
    assert load_index_bundle(uri).model_version == "v3"
    if where == "local":
        assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == ["index"], "no staging left behind"


def test_a_bundle_whose_metadata_misses_ids_is_refused_before_anything_is_written(data: tuple, tmp_path: Path) -> None:
    """Such a bundle would be written whole and then refused by every search that loads it."""
    base, _, ids, _ = data
    uri = str(tmp_path / "index")
    metadata = {
        "images": {str(i): {"file_name": f"{i}.jpg"} for i in ids[:298]},
        "captions": {str(i): {"text": f"caption {i}"} for i in ids[300:900]},
    }
    refused = rf"the images index for {uri} holds 2 ids that its metadata has no 'images' entry for: \d+, \d+; nothing"
    with pytest.raises(IndexBundleError, match=refused):
        write_index_bundle(uri, _bundle(base, ids), metadata, {"model_version": "v1", "model_bundle": "m"})
    assert not list(tmp_path.iterdir()), "nothing published"


def test_incomplete_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "images.faiss").write_bytes(b"partial")
    with pytest.raises(IndexBundleError, match=r"index\.json is missing"):
        load_index_bundle(str(tmp_path / "half"))
