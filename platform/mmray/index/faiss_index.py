"""faiss indexes over L2-normalised embeddings (inner product); the only module that imports faiss.
An index is built and saved on the CPU; with GPUs (faiss-gpu), flat and IVF indexes are searched through a
GPU clone, one search at a time (faiss's GPU indexes are not thread-safe)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmray.errors import ConfigError, QueryError
from mmray.index.faiss_layout import check_index_file

try:
    import faiss
except ImportError as missing:
    raise ImportError(
        "faiss is not installed: pip install 'mmray[cpu]' (faiss-cpu) or, on CUDA 12 GPUs, 'mmray[gpu]' "
        "(faiss-gpu-cu12)"
    ) from missing

logger = logging.getLogger(__name__)
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu")


def installed_faiss_distributions() -> list[str]:
    """The faiss builds installed here ('faiss-cpu 1.15.1'); more than one share (and overwrite) one module."""
    found = []
    for name in FAISS_DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return found


if len(installed_faiss_distributions()) > 1:
    logger.warning(
        "several faiss builds are installed (%s); they overwrite each other's files in the one `faiss` module: "
        "keep one (`pip uninstall faiss-cpu`, then reinstall faiss-gpu-cu12 on GPU machines; `make venv FAISS=gpu`)",
        ", ".join(installed_faiss_distributions()),
    )

AUTO_FLAT_LIMIT = 50_000
AUTO_IVF_FLAT_LIMIT = 2_000_000
GPU_MAX_NPROBE = 2048
"""The most IVF lists faiss's GPU indexes search per query."""
FAISS_CLASSES = {"flat": "IndexFlatIP", "ivf_flat": "IndexIVFFlat", "ivf_pq": "IndexIVFPQ", "hnsw": "IndexHNSWFlat"}
"""The faiss class `build_index` makes for each index type (all over the inner product)."""


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

    def resolved_nlist(self, count: int) -> int:
        """`nlist`, or by default about √count lists of at least 39 vectors each."""
        return self.nlist or max(1, min(count // 39, round(math.sqrt(count))))


def check_trainable(spec: IndexSpec, count: int, what: str = "vectors") -> None:
    """`ConfigError` when `count` vectors are too few to train the index `spec` asks for: an IVF index needs
    at least `nlist` of them, IVF-PQ also 2**pq_bits (the centroids of each sub-quantizer)."""
    kind = spec.resolved_type(count)
    if kind not in ("ivf_flat", "ivf_pq"):
        return
    chosen = f"index.type={spec.type}" + (f" (chose {kind})" if spec.type != kind else "")
    other = "index.type=flat" if spec.type == "auto" else "index.type=auto or flat"
    nlist = spec.resolved_nlist(count)
    if count < nlist:
        raise ConfigError(
            f"{chosen}: index.nlist={nlist} IVF lists need at least {nlist} {what} to train, but there are "
            f"{count}; lower index.nlist (unset, it is about √n), or use {other}"
        )
    if kind == "ivf_pq" and count < 2**spec.pq_bits:
        raise ConfigError(
            f"{chosen} needs at least {2**spec.pq_bits} {what} to train its product quantizer (2**index.pq_bits, "
            f"index.pq_bits={spec.pq_bits}), but there are {count}; use {other} for so few, or "
            "lower index.pq_bits"
        )


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2:
        raise ValueError(f"expected vectors of shape (n, d), got {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def check_gpu_nprobe(nprobe: int | None) -> None:
    """faiss's GPU IVF indexes search at most `GPU_MAX_NPROBE` lists; more is refused with what to do."""
    if nprobe is not None and nprobe > GPU_MAX_NPROBE:
        raise QueryError(
            f"nprobe {nprobe} is more than faiss's GPU indexes search ({GPU_MAX_NPROBE}); ask for at most "
            f"{GPU_MAX_NPROBE}, or serve the index on the CPU (index.use_gpu_index: false)"
        )


class VectorIndex:
    """A faiss index plus the ids of its rows; `search` answers (scores, ids), best first. `index`: the CPU
    index (saved, holding the default search settings); `gpu_index`: its GPU clone searches run on, if any."""

    def __init__(self, index: Any, ids: np.ndarray, kind: str, gpu_index: Any = None) -> None:
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index = index
        self.gpu_index = gpu_index
        self.ids = np.asarray(ids, dtype=np.int64)
        self.kind = kind
        self._gpu_lock = threading.Lock()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search_parameters(self, nprobe: int | None = None, ef_search: int | None = None) -> Any:
        """Per-call faiss SearchParameters (None: the index's saved defaults), so concurrent searches never race
        on the shared index; a breadth beyond the whole index (every list, every vector) searches all of it."""
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and value < 1:
                raise QueryError(f"{name} must be at least 1, got {value}")
        if nprobe is not None and self.kind.startswith("ivf"):
            lists = int(faiss.extract_index_ivf(self.index).nlist)
            return faiss.SearchParametersIVF(nprobe=min(int(nprobe), lists))  # type: ignore[call-arg]
        if ef_search is not None and self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=min(int(ef_search), max(self.size, 1)))  # type: ignore[attr-defined]
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
        if self.gpu_index is not None:
            scores, rows = self._search_gpu(matrix, k, params)
        else:
            scores, rows = self.index.search(matrix, k, params=params)
        return scores, np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)

    def _search_gpu(self, matrix: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """One search at a time on the GPU clone; a per-call nprobe (`params`) is set for the call and put back."""
        # `params`: IVF's with the nprobe wanted, or None (a flat index, or the saved nprobe)
        default = 0 if params is None else int(faiss.extract_index_ivf(self.index).nprobe)
        wanted = default if params is None else int(params.nprobe)
        check_gpu_nprobe(wanted)
        space = faiss.GpuParameterSpace()
        with self._gpu_lock:
            if wanted != default:
                space.set_index_parameter(self.gpu_index, "nprobe", wanted)
            try:
                return self.gpu_index.search(matrix, k)  # type: ignore[no-any-return]
            finally:
                if wanted != default:
                    space.set_index_parameter(self.gpu_index, "nprobe", default)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, ids: np.ndarray, kind: str, use_gpu: bool = True) -> VectorIndex:
        """The index saved at `path`, refused (`ValueError`) before faiss reads it if a size it claims does not
        fit in the file, or once read if it is not an inner-product index of `kind` over `ids`."""
        check_index_file(path)
        index = faiss.read_index(str(path))
        held = type(index).__name__
        if held != FAISS_CLASSES.get(kind) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"it holds a {held} (metric {index.metric_type}), not an inner-product {kind!r} index")
        if ids.shape != (index.ntotal,):
            raise ValueError(f"{index.ntotal} vectors but ids of shape {ids.shape}")
        return cls(index, ids, kind, _gpu_clone(index, kind, use_gpu))


def _gpu_clone(index: Any, kind: str, use_gpu: bool) -> Any:
    """The index cloned onto every GPU faiss sees (one GPU index, or replicas of it), or None: no GPU, not
    asked for, or HNSW (CPU only). The clone searches with the CPU index's nprobe."""
    if not use_gpu or kind == "hnsw" or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return None
    check_gpu_nprobe(int(faiss.extract_index_ivf(index).nprobe) if kind.startswith("ivf") else None)
    return faiss.index_cpu_to_all_gpus(index)


def build_index(vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec) -> VectorIndex:
    """Build and fill an inner-product index of the type `spec` asks for (or its size rule picks)."""
    matrix = _as_matrix(vectors)
    count, dim = matrix.shape
    if count == 0:
        raise ValueError("cannot build an index over zero vectors")
    kind = spec.resolved_type(count)
    check_trainable(spec, count)
    nlist = spec.resolved_nlist(count)
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
    elif kind in ("ivf_flat", "ivf_pq"):
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % spec.pq_m:
                raise ConfigError(f"index.pq_m={spec.pq_m} must divide the embedding dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, spec.pq_m, spec.pq_bits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = spec.seed
        size = max(spec.train_sample, 39 * nlist, 2**spec.pq_bits if kind == "ivf_pq" else 0)  # a seeded sample
        rng = np.random.default_rng(spec.seed)
        index.train(matrix if count <= size else matrix[np.sort(rng.choice(count, size=size, replace=False))])
        index.nprobe = spec.nprobe
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    else:
        raise ValueError(f"unknown index type {kind!r}; expected flat, ivf_flat, ivf_pq, hnsw or auto")
    index.add(matrix)
    return VectorIndex(index, ids, kind, _gpu_clone(index, kind, spec.use_gpu))
