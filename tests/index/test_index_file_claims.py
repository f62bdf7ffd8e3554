"""A faiss file whose header claims more than the file holds is refused before faiss allocates the claim;
genuine indexes of every type (IVF with many, partly empty lists; HNSW) still load."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mmray.artifacts.index_bundle import write_index_bundle
from mmray.index.faiss_index import IndexSpec, VectorIndex, build_index

CLAIM = 3 * 2**30
"""The bytes each damaged file claims: enough to show in peak RSS, little enough to be safe if allocated."""
ALLOWED_GROWTH_KIB = 500 * 1024
DIM, COUNT, NLIST, PQ_M = 16, 300, 4, 4
HEADER = 4 + 33
"""A fourcc, then d, ntotal, two dummies, is_trained and an inner-product metric (no metric_arg)."""

LOAD = """
import json, resource, sys
from mmray.artifacts.index_bundle import load_index_bundle
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_index_bundle(sys.argv[1], use_gpu=False)
    outcome = "loaded"
except BaseException as exc:
    outcome = f"{type(exc).__name__}: {exc}"
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcome": outcome, "grown_kib": grown}))
"""


def _u64(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 8] = struct.pack("<Q", value)


def _vector_size(offset: Callable[[bytes], int], item: int) -> Callable[[bytearray], None]:
    """Set the uint64 size of the vector at `offset(file)` so that its `item`-byte elements take CLAIM bytes."""
    return lambda data: _u64(data, offset(bytes(data)), CLAIM // item)


def _first_list(data: bytes) -> int:
    full = data.find(b"full")
    assert full > 0, "a small index with every list filled stores its list sizes in full"
    return full + 4 + 8


def _list_and_total(data: bytearray) -> None:
    """The first list's size and the index's ntotal alike, so that the list's vectors take CLAIM bytes."""
    first, claim = _first_list(bytes(data)), CLAIM // (DIM * 4 + 8)
    _u64(data, 8, COUNT - struct.unpack_from("<Q", data, first)[0] + claim)
    _u64(data, first, claim)


def _pq_dim(data: bytearray) -> None:
    """The product quantizer's d, so that its d * 256 float centroids take CLAIM bytes."""
    pq = HEADER + 16 + HEADER + 8 + NLIST * DIM * 4 + 1 + 8 + 1 + 8
    assert struct.unpack_from("<QQQ", data, pq) == (DIM, PQ_M, 8)
    _u64(data, pq, CLAIM // (256 * 4) // PQ_M * PQ_M)


CLAIMS = {
    ("flat", "codes"): _vector_size(lambda _: HEADER, 4),
    ("hnsw", "assign_probas"): _vector_size(lambda _: HEADER, 8),
    ("hnsw", "storage codes"): _vector_size(lambda data: data.find(b"IxFI") + HEADER, 4),
    ("ivf_flat", "quantizer codes"): _vector_size(lambda _: HEADER + 16 + HEADER, 4),
    ("ivf_flat", "list size"): _vector_size(_first_list, DIM * 4 + 8),
    ("ivf_flat", "list size and ntotal"): _list_and_total,
    ("ivf_pq", "list size"): _vector_size(_first_list, PQ_M + 8),
    ("ivf_pq", "pq dimension"): _pq_dim,
}


def _bundle(root: Path, kind: str) -> Path:
    vectors = np.random.default_rng(0).standard_normal((COUNT, DIM)).astype(np.float32)
    spec = IndexSpec(type=kind, nlist=NLIST, pq_m=PQ_M, use_gpu=False)
    index = build_index(vectors, np.arange(COUNT), spec)
    manifest = {"model_version": "v", "model_bundle": "m", "split": "val"}
    metadata = {"images": {str(i): {"file_name": f"{i}.jpg"} for i in range(COUNT)}, "captions": {}}
    write_index_bundle(str(root), {"images": index}, metadata, manifest)
    return root / "images.faiss"


@pytest.mark.parametrize(("kind", "field"), list(CLAIMS))
def test_a_file_claiming_more_than_it_holds_is_refused_without_allocating(
    tmp_path: Path, kind: str, field: str
) -> None:
    path = _bundle(tmp_path / "index", kind)
    data = bytearray(path.read_bytes())
    CLAIMS[kind, field](data)
    path.write_bytes(bytes(data))
    run = subprocess.run(
        [sys.executable, "-c", LOAD, str(path.parent)], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert run.returncode == 0, f"the load was killed ({run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith("IndexBundleError: ") and "images.faiss" in result["outcome"], result
    assert result["grown_kib"] < ALLOWED_GROWTH_KIB, f"peak RSS grew {result['grown_kib'] // 1024} MiB: {result}"


@pytest.mark.parametrize(
    ("kind", "nlist", "distinct"),
    [
        ("ivf_flat", 1024, 3000),
        ("ivf_pq", 2000, 3000),
        ("ivf_flat", 1000, 100),
        ("ivf_pq", 1000, 100),
        ("hnsw", None, 3000),
    ],
)
def test_genuine_indexes_load(tmp_path: Path, kind: str, nlist: int | None, distinct: int) -> None:
    """Lists mostly filled are saved as 'full' sizes; over 100 distinct vectors most of 1000 lists stay empty,
    and their sizes are saved as 'sprs' (sparse) pairs."""
    base = np.random.default_rng(1).standard_normal((distinct, 32)).astype(np.float32)
    vectors, ids = base[np.arange(3000) % distinct], np.arange(3000, dtype=np.int64) * 3
    index = build_index(vectors, ids, IndexSpec(type=kind, nlist=nlist, pq_m=8, use_gpu=False))
    index.save(tmp_path / "index.faiss")
    if kind != "hnsw":
        assert ((tmp_path / "index.faiss").read_bytes().find(b"sprs") > 0) == (distinct < nlist)
    loaded = VectorIndex.load(tmp_path / "index.faiss", ids, kind, use_gpu=False)
    assert (loaded.size, loaded.dim) == (3000, 32)
    np.testing.assert_array_equal(loaded.search(vectors[:20], 5)[1], index.search(vectors[:20], 5)[1])
