"""A corpus of damaged, hostile and unusual image files, made (not downloaded) with what each decode path
must do with it: decode it correctly, refuse it as undecodable, refuse it as too large, or either refuse it or
decode it intact (a truncation past the last pixel), or at least survive it (a flipped header bit)."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Expect = Literal["decodes", "refused", "too_large", "refused_or_intact", "survives"]
WIDTH, HEIGHT = 96, 64


@dataclass(frozen=True)
class Sample:
    """One corpus file; `reference`: the (H, W, 3) uint8 a correct decode gives, within `tolerance` (mean
    absolute difference; 0 for lossless formats)."""

    name: str
    image_id: int
    expect: Expect
    reference: np.ndarray | None = None
    tolerance: float = 0.0


def _picture(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A smooth picture with a few flat shapes -> uint8 (H, W, 3): compresses into many rows of data."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 20, 20)
    pixels[height // 2 :, width // 2 :] = (20, 20, 250)
    return pixels.astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))


def png_claiming(width: int, height: int, rows: int) -> bytes:
    """A well-formed 8-bit RGB PNG header for width × height whose image data holds only `rows` rows."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"".join(b"\x00" + bytes([128]) * (width * 3) for _ in range(rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(data)) + _chunk(b"IEND", b"")


def _png_with_a_second_header(width: int, height: int) -> bytes:
    """A PNG whose first IHDR claims 1 × 1 (what a header check reads) and whose second, which decoders
    take, claims width × height, with image data for the second."""
    first = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    second = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x00" + b"\x80" * (width * 3)) * height
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", first) + _chunk(b"IHDR", second)
            + _chunk(b"IDAT", zlib.compress(data)) + _chunk(b"IEND", b""))  # fmt: skip


def _png16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG (grey: colour type 0, RGB: 2) of big-endian samples (H, W) or (H, W, 3)."""
    height, width = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to claim width × height."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (10, 200, 10)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def _webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header is rewritten to claim width × height (14 bits each)."""
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8 + 1
    bits = int.from_bytes(data[at : at + 4], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[at : at + 4] = bits.to_bytes(4, "little")
    return bytes(data)


def _flipped(data: bytes, positions: list[int], rng: random.Random) -> bytes:
    changed = bytearray(data)
    for position in positions:
        changed[position] ^= 1 << rng.randrange(8)
    return bytes(changed)


def _header_span(data: bytes) -> int:
    """Bytes before the first pixel data: a JPEG's markers up to its scan, a PNG's signature and IHDR, a
    GIF's screen descriptor and palette, a WebP's RIFF and chunk headers."""
    if data.startswith(b"\xff\xd8"):
        return data.index(b"\xff\xda") + 10
    if data.startswith(b"\x89PNG"):
        return 33
    if data.startswith(b"GIF"):
        return 13 + 3 * 2 ** ((data[10] & 7) + 1)
    return 30


def _originals(picture: np.ndarray) -> dict[str, tuple[bytes, np.ndarray, float]]:
    """Valid files: name -> (bytes, reference decode, tolerance)."""
    image = Image.fromarray(picture)
    gif = encoded(image, "GIF")
    with Image.open(io.BytesIO(gif)) as opened:
        gif_pixels = np.asarray(opened.convert("RGB"))
    return {
        "photo.jpg": (encoded(image, "JPEG", quality=92), picture, 6.0),
        "photo.png": (encoded(image, "PNG"), picture, 0.0),
        "photo.gif": (gif, gif_pixels, 0.0),
        "photo.webp": (encoded(image, "WEBP", lossless=True), picture, 0.0),
    }


def _unusual(picture: np.ndarray) -> list[tuple[str, bytes, Expect, np.ndarray | None, float]]:
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint64)
    rgb16 = rng.integers(0, 65536, (HEIGHT, WIDTH, 3), dtype=np.uint64)
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.putdata([0, 1, 2, 0, 2, 1, 0, 1])
    palette_rgb = np.array([[0, 1, 2, 0], [2, 1, 0, 1]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    cmyk = Image.new("CMYK", (24, 16), (0, 255, 255, 0))  # red
    frames = [Image.new("RGB", (12, 10), colour) for colour in ((200, 0, 0), (0, 200, 0))]
    image = Image.fromarray(picture)
    return [
        ("one-by-one.png", encoded(Image.new("RGB", (1, 1), (7, 8, 9)), "PNG"), "decodes",
         np.array([[[7, 8, 9]]], np.uint8), 0.0),
        ("one-by-one.jpg", encoded(Image.new("RGB", (1, 1), (120, 120, 120)), "JPEG"), "decodes",
         np.full((1, 1, 3), 120, np.uint8), 3.0),
        ("grey-16bit.png", _png16(grey16, 0), "decodes",
         np.repeat((grey16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2), 0.0),
        ("rgb-16bit.png", _png16(rgb16, 2), "decodes", (rgb16 >> 8).astype(np.uint8), 0.0),
        ("palette-transparent.png", encoded(palette, "PNG", transparency=1), "decodes", colours[palette_rgb], 0.0),
        ("interlaced.png", _interlaced_png(picture), "decodes", picture, 0.0),
        ("cmyk.jpg", encoded(cmyk, "JPEG"), "decodes", np.asarray(cmyk.convert("RGB")), 4.0),
        ("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), "decodes",
         np.asarray(frames[0]), 0.0),
        ("greyscale.jpg", encoded(image.convert("L"), "JPEG", quality=95), "decodes",
         np.repeat(np.asarray(image.convert("L"))[:, :, None], 3, axis=2), 4.0),
        ("empty.jpg", b"", "refused", None, 0.0),
        ("text.jpg", b"These are the minutes of the meeting, not a picture.\n" * 3, "refused", None, 0.0),
        ("one-row.png", png_claiming(100, 100, 1), "refused", None, 0.0),
        ("second-header.png", _png_with_a_second_header(300, 200), "refused", None, 0.0),
        ("bomb-40000.png", png_claiming(40000, 40000, 1), "too_large", None, 0.0),
        ("bomb-7000.png", png_claiming(7000, 7000, 1), "too_large", None, 0.0),
        ("bomb.jpg", _jpeg_claiming(60000, 60000), "too_large", None, 0.0),
        ("bomb.gif", _gif_claiming(65535, 65535), "too_large", None, 0.0),
        ("bomb.webp", _webp_claiming(16383, 16383), "too_large", None, 0.0),
    ]  # fmt: skip


def _interlaced_png(picture: np.ndarray) -> bytes:
    """An Adam7-interlaced RGB PNG, its passes written by hand (Pillow writes none)."""
    height, width = picture.shape[:2]
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b"".join(
        b"\x00" + picture[row, x0::dx].tobytes() for x0, y0, dx, dy in passes for row in range(y0, height, dy)
        if x0 < width
    )  # fmt: skip
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def write_corpus(directory: Path) -> list[Sample]:
    """Write every file of the corpus into `directory` (image ids from 1, in order) and say what each must give."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(27)
    picture = _picture()
    entries: list[tuple[str, bytes, Expect, np.ndarray | None, float]] = []
    for name, (data, reference, tolerance) in _originals(picture).items():
        stem, suffix = name.split(".")
        entries.append((name, data, "decodes", reference, tolerance))
        for cut in (len(data) // 10, len(data) // 2, len(data) * 9 // 10, len(data) - 1):
            entries.append((f"{stem}-cut{cut}.{suffix}", data[:cut], "refused_or_intact", reference, tolerance))
        for flip in range(3):
            flipped = _flipped(data, rng.sample(range(_header_span(data)), 2), rng)
            entries.append((f"{stem}-flip{flip}.{suffix}", flipped, "survives", None, 0.0))
    entries.extend(_unusual(picture))
    samples = []
    for image_id, (name, data, expect, reference, tolerance) in enumerate(entries, start=1):
        (directory / name).write_bytes(data)
        samples.append(Sample(name, image_id, expect, reference, tolerance))
    return samples


def write_captions(samples: list[Sample], path: Path) -> Path:
    """A COCO captions file listing every corpus file as an image with one caption."""
    images = [{"id": s.image_id, "file_name": s.name, "width": WIDTH, "height": HEIGHT} for s in samples]
    annotations = [{"id": s.image_id, "image_id": s.image_id, "caption": f"a picture called {s.name}"} for s in samples]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path
