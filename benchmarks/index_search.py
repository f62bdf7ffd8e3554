"""Nearest-neighbour search: exact brute force (NumPy, torch) against faiss Flat, IVF and HNSW.

Synthetic L2-normalised vectors shaped like real embeddings: a mixture of Gaussian clusters in a
32-d latent space, mapped to `--dim` dimensions by a random linear map, plus a little isotropic noise
(model embeddings have a low intrinsic dimension; uniform noise on the sphere has none and no index
can beat brute force on it). 100k and 1M vectors by default. For each method, in one run: build
time, queries/s for single queries and for one batch, and recall@10 against the exact top-10. The
faiss indexes are built by `mmray.index.faiss_index.build_index` with the settings `mmray index` uses by default.
Usage: python benchmarks/index_search.py [--sizes 100000 1000000] [--dim 256] [--queries 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmray.config.indexing import IndexSettings
from mmray.index.faiss_index import build_index
from mmray.retrieval.indexing import index_spec

RESULTS = Path(__file__).resolve().parent / "results"


LATENT_DIM = 32


def embedding_like_vectors(
    count: int, projection: np.ndarray, centres: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    latent = centres[rng.integers(len(centres), size=count)] + 0.5 * rng.standard_normal((count, LATENT_DIM))
    vectors = (latent @ projection).astype(np.float32)  # (n, dim)
    vectors += (
        0.05
        * np.linalg.norm(vectors, axis=1, keepdims=True)
        / np.sqrt(projection.shape[1])
        * (rng.standard_normal(vectors.shape).astype(np.float32))
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ base.T  # (q, n)
    top = np.argpartition(-scores, k, axis=1)[:, :k]  # (q, k)
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def torch_topk(base: torch.Tensor, queries: np.ndarray, k: int) -> np.ndarray:
    return torch.topk(torch.from_numpy(queries) @ base.T, k, dim=1).indices.numpy()


def timed(function: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def chunked(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, chunk: int = 100) -> np.ndarray:
    return np.concatenate([search(queries[i : i + chunk]) for i in range(0, len(queries), chunk)])


def bench_size(count: int, dim: int, queries_count: int, singles: int, rng: np.random.Generator) -> list[dict]:
    projection = rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)
    centres = rng.standard_normal((max(100, count // 1000), LATENT_DIM))
    base = embedding_like_vectors(count, projection, centres, rng)
    queries = embedding_like_vectors(queries_count, projection, centres, rng)
    ids = np.arange(count, dtype=np.int64)
    k = 10
    rows = []
    exact, batch_s = timed(lambda: chunked(lambda q: numpy_topk(base, q, k), queries))
    _, single_s = timed(lambda: [numpy_topk(base, queries[i : i + 1], k) for i in range(singles)])
    rows.append(("exact NumPy", 0.0, singles / single_s, queries_count / batch_s, 1.0))
    tensor = torch.from_numpy(base)
    found, batch_s = timed(lambda: chunked(lambda q: torch_topk(tensor, q, k), queries))
    _, single_s = timed(lambda: [torch_topk(tensor, queries[i : i + 1], k) for i in range(singles)])
    rows.append(("exact torch", 0.0, singles / single_s, queries_count / batch_s, recall_at_10(found, exact)))
    defaults = IndexSettings()
    for kind in ("flat", "ivf_flat", "ivf_pq", "hnsw"):
        spec = dataclasses.replace(index_spec(defaults), type=kind)
        index, build_s = timed(lambda spec=spec: build_index(base, ids, spec))
        sweep = {
            "ivf_flat": [("nprobe", n) for n in (defaults.nprobe, 2 * defaults.nprobe, 4 * defaults.nprobe)],
            "hnsw": [("ef_search", e) for e in (defaults.ef_search // 2, defaults.ef_search)],
        }.get(kind, [(None, None)])
        for parameter, value in sweep:
            params = {parameter: value} if parameter else {}
            found, batch_s = timed(lambda index=index, p=params: index.search(queries, k, **p)[1])
            _, single_s = timed(
                lambda index=index, p=params: [index.search(queries[i : i + 1], k, **p) for i in range(singles)]
            )
            label = f"faiss {kind}" + (f" {parameter}={value}" if parameter else "")
            rows.append((label, build_s, singles / single_s, queries_count / batch_s, recall_at_10(found, exact)))
        del index
    return [
        {
            "vectors": count,
            "dim": dim,
            "method": name,
            "build_s": build,
            "single_qps": single,
            "batched_qps": batched,
            "recall_at_10": recall,
        }
        for name, build, single, batched, recall in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000, help="queries in the batched measurement")
    parser.add_argument("--singles", type=int, default=50, help="queries sent one at a time")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for count in args.sizes:
        rows.extend(bench_size(count, args.dim, args.queries, args.singles, rng))
    header = f"{'vectors':>9} {'method':<28}{'build s':>9}{'single q/s':>12}{'batched q/s':>13}"
    print(f"\n{header}{'× exact':>9}{'recall@10':>11}")
    for row in rows:
        exact = next(r for r in rows if r["vectors"] == row["vectors"] and r["method"] == "exact NumPy")
        speedup = row["batched_qps"] / exact["batched_qps"]
        print(
            f"{row['vectors']:>9} {row['method']:<28}{row['build_s']:>9.1f}{row['single_qps']:>12.0f}"
            f"{row['batched_qps']:>13.0f}{speedup:>8.1f}×{row['recall_at_10']:>11.3f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "index_search.json").write_text(json.dumps({"benchmark": "index_search", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
