"""Hypothesis strategies for hostile uploads: random bytes, random bytes behind an image format's magic
number, and valid small images truncated and with bytes overwritten."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image

MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBPVP8L", b"BM", b"II*\x00")


def seed_images() -> list[bytes]:
    """Small valid images, one per format the decoder takes, with enough data to damage."""
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    seeds = []
    for fmt, options in (("JPEG", {}), ("PNG", {}), ("GIF", {}), ("WEBP", {"lossless": True}), ("BMP", {}),
                         ("TIFF", {"compression": "tiff_deflate"}), ("WEBP", {"quality": 50})):  # fmt: skip
        buffer = io.BytesIO()
        pixels.save(buffer, format=fmt, **options)
        seeds.append(buffer.getvalue())
    return seeds


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed image cut short and/or with a few bytes overwritten (more often near its header)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        limit = draw(st.sampled_from([min(64, len(data)), len(data)]))
        data[draw(st.integers(0, limit - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def hostile_bytes(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, random bytes behind a magic number, or a mutated valid image."""
    behind_magic = st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGIC), st.binary(max_size=600))
    return st.one_of(st.binary(max_size=600), behind_magic, mutated(seeds))
