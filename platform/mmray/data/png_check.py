"""Whether a PNG holds what its header promises, checked before its pixels are decoded: one IHDR, first (the
size the pixel limit was checked against), every chunk whole with a matching CRC up to IEND, and compressed
image data for every row. Pillow fills missing rows with black without a word; libpng stops with "Not enough
image data", an error path that can crash the process."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20


def _row_bytes(width: int, bits_per_pixel: int) -> int:
    return 1 + (width * bits_per_pixel + 7) // 8  # the filter byte, then the packed samples


def raw_size(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of filtered image data a PNG of this header inflates to."""
    bits = bit_depth * _CHANNELS[colour_type]
    if not interlaced:
        return height * _row_bytes(width, bits)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        columns, rows = max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy)
        if columns and rows:
            total += rows * _row_bytes(columns, bits)
    return total


def _chunks(data: bytes) -> tuple[bytes, list[memoryview]] | str:
    """(IHDR's content, the IDAT contents) of a whole PNG, or what is wrong with its chunks."""
    view, position, header, image_data = memoryview(data), len(SIGNATURE), b"", []
    while True:
        if position + 12 > len(data):
            return "the file is truncated (it ends before IEND)"
        length, kind = struct.unpack_from(">I4s", data, position)
        name = kind.decode("latin-1")
        end = position + 12 + length
        if end > len(data):
            return f"the file is truncated in chunk {name!r}"
        content = view[position + 8 : end - 4]
        if zlib.crc32(content, zlib.crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return f"chunk {name!r} is damaged (CRC mismatch)"
        if (kind == b"IHDR") != (position == len(SIGNATURE)):  # the header check reads the first chunk only
            return "its IHDR chunk is not the first chunk, or is repeated"
        if kind == b"IHDR":
            header = bytes(content)
        elif kind == b"IDAT":
            image_data.append(content)
        elif kind == b"IEND":
            return header, image_data
        position = end


def _inflated_size(parts: list[memoryview], enough: int) -> int:
    """Bytes the concatenated zlib stream inflates to, counted in steps, stopping once `enough` are seen."""
    inflater, total = zlib.decompressobj(), 0
    for part in parts:
        pending: bytes | memoryview = part
        while pending and total < enough:
            total += len(inflater.decompress(pending, _INFLATE_STEP))
            pending = inflater.unconsumed_tail
    return total


def png_problem(data: bytes) -> str | None:
    """What makes a PNG undecodable (truncated, a damaged chunk, rows missing), or None when it is whole."""
    if not data.startswith(SIGNATURE):
        return "not a PNG file"
    found = _chunks(data)
    if isinstance(found, str):
        return found
    header, image_data = found
    if len(header) != 13:
        return "its IHDR chunk is missing or malformed"
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if colour_type not in _CHANNELS or bit_depth not in (1, 2, 4, 8, 16):
        return f"unknown colour type {colour_type} or bit depth {bit_depth}"
    expected = raw_size(width, height, bit_depth, colour_type, interlace == 1)
    try:
        inflated = _inflated_size(image_data, expected)
    except zlib.error as exc:
        return f"its image data is damaged ({exc})"
    if inflated < expected:
        return f"its image data ends early ({inflated} of {expected} bytes: rows are missing)"
    return None
