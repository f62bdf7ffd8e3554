"""faiss indexes over L2-normalised embeddings (inner product); the only module that imports faiss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mmray.errors import QueryError

AUTO_FLAT_LIMIT = 50_000
AUTO_IVF_FLAT_LIMIT = 2_000_000


def gpu_count() -> int:
    """GPUs visible to faiss (0 with faiss-cpu)."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@dataclass(frozen=True)
class IndexSpec:
    """How to build an index: the type and its parameters."""

    type: str = "auto"
    nlist: int | None = None
    nprobe: int = 8
    pq_m: int = 32
    pq_bits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_sample: int = 200_000
    use_gpu: bool = True
    seed: int = 0

    def resolved_type(self, count: int) -> str:
        if self.type != "auto":
            return self.type
        if count <= AUTO_FLAT_LIMIT:
            return "flat"
        return "ivf_flat" if count <= AUTO_IVF_FLAT_LIMIT else "ivf_pq"


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2:
        raise ValueError(f"expected vectors of shape (n, d), got {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


class VectorIndex:
    """A faiss index plus the ids of its rows; `search` answers (scores, ids), best first."""

    def __init__(self, index: Any, ids: np.ndarray, kind: str) -> None:
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index = index
        self.ids = np.asarray(ids, dtype=np.int64)
        self.kind = kind

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_default_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """The IVF `nprobe` / HNSW `efSearch` saved with the index (set while building, before sharing it)."""
        if nprobe is not None and self.kind.startswith("ivf"):
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        if ef_search is not None and self.kind == "hnsw":
            self.index.hnsw.efSearch = ef_search

    def search_parameters(self, nprobe: int | None = None, ef_search: int | None = None) -> Any:
        """Per-call faiss SearchParameters (None: the index's saved defaults); the shared index is
        never changed, so concurrent searches with different settings cannot race."""
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and value < 1:
                raise QueryError(f"{name} must be at least 1, got {value}")
        if nprobe is not None and self.kind.startswith("ivf"):
            return faiss.SearchParametersIVF(nprobe=int(nprobe))  # type: ignore[call-arg]
        if ef_search is not None and self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=int(ef_search))  # type: ignore[attr-defined]
        return None

    def search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: scores (q, k) and ids (q, k); missing results have id -1.
        `nprobe` (IVF) and `ef_search` (HNSW) apply to this call only."""
        matrix = _as_matrix(queries)
        if matrix.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {matrix.shape[1]}, the index has {self.dim}")
        k = min(k, self.size)
        params = self.search_parameters(nprobe, ef_search)
        if params is None:
            scores, rows = self.index.search(matrix, k)
        else:
            scores, rows = self.index.search(matrix, k, params=params)
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)
        return scores, ids

    def save(self, path: Path) -> None:
        index = faiss.index_gpu_to_cpu(self.index) if _on_gpu(self.index) else self.index
        faiss.write_index(index, str(path))

    @classmethod
    def load(cls, path: Path, ids: np.ndarray, kind: str, use_gpu: bool = True) -> VectorIndex:
        index = faiss.read_index(str(path))
        return cls(_maybe_to_gpu(index, kind, use_gpu), ids, kind)


def _on_gpu(index: Any) -> bool:
    return "Gpu" in type(index).__name__


def _maybe_to_gpu(index: Any, kind: str, use_gpu: bool) -> Any:
    if not use_gpu or gpu_count() == 0 or kind == "hnsw":
        return index
    return faiss.index_cpu_to_all_gpus(index)


def _training_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(vectors) <= size:
        return vectors
    rows = np.random.default_rng(seed).choice(len(vectors), size=size, replace=False)
    return vectors[np.sort(rows)]


def build_index(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> VectorIndex:
    """Build and fill an inner-product index of the type `spec` asks for (or its size rule picks)."""
    matrix = _as_matrix(vectors)
    count, dim = matrix.shape
    if count == 0:
        raise ValueError("cannot build an index over zero vectors")
    kind = spec.resolved_type(count)
    nlist = spec.nlist or max(1, min(count // 39, round(math.sqrt(count))))
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
    elif kind in ("ivf_flat", "ivf_pq"):
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % spec.pq_m:
                raise ValueError(f"pq_m={spec.pq_m} must divide the embedding dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, spec.pq_m, spec.pq_bits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = spec.seed
        index.train(_training_sample(matrix, max(spec.train_sample, 39 * nlist), spec.seed))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    else:
        raise ValueError(f"unknown index type {kind!r}; expected flat, ivf_flat, ivf_pq, hnsw or auto")
    index = _maybe_to_gpu(index, kind, spec.use_gpu)
    index.add(matrix)
    built = VectorIndex(index, ids, kind)
    built.set_default_search_params(nprobe=spec.nprobe, ef_search=spec.ef_search)
    return built
