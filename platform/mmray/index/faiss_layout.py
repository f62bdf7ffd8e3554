"""The layout of the faiss index files mmray writes (IndexFlatIP, IndexIVFFlat, IndexIVFPQ, IndexHNSWFlat),
walked without reading their vectors to check that each size the file claims fits in what it holds: faiss
allocates each vector, list and table before reading it, so a damaged header of a small file could make it
allocate gigabytes."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

FLAT, IVF_FLAT, IVF_PQ, HNSW = b"IxFI", b"IwFl", b"IwPQ", b"IHNf"
MAX_PQ_BITS = 24
"""faiss's own limit on the bits of a product quantizer's code."""


class _Cursor:
    """A position in the file; what it takes or skips must lie within the file."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.length = os.fstat(file.fileno()).st_size

    @property
    def left(self) -> int:
        return self.length - self.file.tell()

    def take(self, layout: str, what: str) -> tuple[int, ...]:
        data = self.file.read(struct.calcsize(layout))
        if len(data) < struct.calcsize(layout):
            raise ValueError(f"it ends within {what}")
        return struct.unpack(layout, data)

    def fourcc(self, expected: bytes, what: str) -> None:
        found = self.file.read(4)
        if found != expected:
            raise ValueError(f"{what} is marked {found!r}, not {expected!r}")

    def fits(self, count: int, item: int, what: str) -> int:
        """`count * item` bytes, which must not be more than are left."""
        if count * item > self.left:
            raise ValueError(
                f"{what}: it claims {count} items of {item} bytes ({count * item} bytes) where {self.left} are left"
            )
        return count * item

    def skip(self, count: int, item: int, what: str) -> None:
        self.file.seek(self.fits(count, item, what), os.SEEK_CUR)

    def vector(self, item: int, what: str) -> int:
        (count,) = self.take("<Q", what)
        self.skip(count, item, what)
        return int(count)


def _header(cur: _Cursor, fourcc: bytes, what: str) -> tuple[int, int]:
    """An index's fourcc and header: its dimension and number of vectors."""
    cur.fourcc(fourcc, what)
    d, ntotal, _, _, _, metric = cur.take("<iqqqBi", f"{what}'s header")
    if d < 1 or ntotal < 0 or metric != 0:
        raise ValueError(f"{what} claims dimension {d}, {ntotal} vectors and metric {metric} (inner product: 0)")
    return d, ntotal


def _flat(cur: _Cursor, what: str) -> tuple[int, int]:
    d, ntotal = _header(cur, FLAT, what)
    floats = cur.vector(4, f"{what}'s vectors")
    if floats != d * ntotal:
        raise ValueError(f"{what} holds {floats} floats, not {ntotal} vectors of dimension {d}")
    return d, ntotal


def _ivf(cur: _Cursor, fourcc: bytes) -> tuple[int, int, int]:
    """An IVF index's header, coarse quantizer and direct map: its dimension, vectors and lists."""
    d, ntotal = _header(cur, fourcc, "the index")
    nlist, _ = cur.take("<QQ", "the index's header")
    if _flat(cur, "its coarse quantizer") != (d, nlist):
        raise ValueError(f"its coarse quantizer does not hold {nlist} centroids of dimension {d}")
    (direct_map,) = cur.take("<B", "its direct map")
    cur.vector(8, "its direct map")
    if direct_map == 2:
        cur.vector(16, "its direct map's hash table")
    return d, ntotal, nlist


def _inverted_lists(cur: _Cursor, nlist: int, code_size: int, ntotal: int) -> None:
    cur.fourcc(b"ilar", "its inverted lists")
    if cur.take("<QQ", "its inverted lists") != (nlist, code_size):
        raise ValueError(f"its inverted lists are not {nlist} lists of {code_size}-byte codes")
    layout = cur.file.read(4)
    (count,) = cur.take("<Q", "its list sizes")
    sizes = np.frombuffer(cur.file.read(cur.fits(count, 8, "its list sizes")), dtype="<u8")
    if layout == b"sprs":
        if count % 2 or np.any(sizes[::2] >= nlist):
            raise ValueError(f"its {count // 2} sparse list sizes do not name lists among {nlist}")
        sizes = sizes[1::2]
    elif layout != b"full" or count != nlist:
        raise ValueError(f"its list sizes are {layout!r} with {count} entries, not 'full' ones for {nlist} lists")
    total = int(sizes.sum(dtype=object))
    if total != ntotal:
        raise ValueError(f"its inverted lists claim {total} vectors, the index {ntotal}")
    cur.skip(total, code_size + 8, "its inverted lists")


def _product_quantizer(cur: _Cursor, d: int) -> int:
    """A product quantizer over `d` dimensions: its code size."""
    pq_d, m, bits = cur.take("<QQQ", "its product quantizer")
    if pq_d != d or not 1 <= m <= d or d % m or not 1 <= bits <= MAX_PQ_BITS:
        raise ValueError(f"its product quantizer claims {m} sub-quantizers of {bits} bits over {pq_d} dimensions")
    if cur.vector(4, "its product quantizer's centroids") != d << bits:
        raise ValueError(f"its product quantizer does not hold {d << bits} centroid floats")
    return (m * bits + 7) // 8


def _walk(cur: _Cursor) -> None:
    fourcc = cur.file.read(4)
    cur.file.seek(0)
    if fourcc == FLAT:
        _flat(cur, "the index")
    elif fourcc == IVF_FLAT:
        d, ntotal, nlist = _ivf(cur, IVF_FLAT)
        _inverted_lists(cur, nlist, 4 * d, ntotal)
    elif fourcc == IVF_PQ:
        d, ntotal, nlist = _ivf(cur, IVF_PQ)
        _, code_size = cur.take("<BQ", "its code size")
        if _product_quantizer(cur, d) != code_size:
            raise ValueError(f"its code size {code_size} is not its product quantizer's")
        _inverted_lists(cur, nlist, code_size, ntotal)
    elif fourcc == HNSW:
        d, ntotal = _header(cur, HNSW, "the index")
        cur.vector(8, "its graph's level probabilities")
        cur.vector(4, "its graph's neighbour counts")
        levels, offsets = cur.vector(4, "its graph's levels"), cur.vector(8, "its graph's offsets")
        if (levels, offsets) != (ntotal, ntotal + 1):
            raise ValueError(f"its graph has {levels} levels and {offsets} offsets for {ntotal} vectors")
        cur.vector(4, "its graph's neighbours")
        cur.take("<5i", "its graph's parameters")
        if _flat(cur, "its storage") != (d, ntotal):
            raise ValueError(f"its storage does not hold {ntotal} vectors of dimension {d}")
    else:
        raise ValueError(f"it is marked {fourcc!r}, not one of the faiss index types mmray writes")
    if cur.left:
        raise ValueError(f"{cur.left} bytes follow the index")


def check_index_file(path: Path) -> None:
    """`ValueError` unless `path` is laid out as a faiss index mmray writes, every size it claims fitting in it."""
    with path.open("rb") as file:
        _walk(_Cursor(file))
