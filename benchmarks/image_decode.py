"""What safe decoding costs: `mmray.data.images.decode_rgb` (header read, then libjpeg-turbo for JPEGs,
Pillow for the rest, PNGs checked whole first) against torchvision's decoders called directly (the
baseline, which a truncated PNG can crash) and Pillow for everything, on the generated shapes JPEGs and the
same images as PNGs. One thread, best of `--repeats` passes over every file.
Usage: python benchmarks/image_decode.py [--images 2000] [--image-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as tvf

from mmray.config import ShapesData
from mmray.data.images import decode_rgb
from mmray.data.shapes import generate_shapes


def torchvision_decode(data: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (n,)
    return decode_image(buffer, mode=ImageReadMode.RGB)  # (3, H, W)


def pillow_decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return tvf.pil_to_tensor(image.convert("RGB"))  # (3, H, W)


def per_image_us(decode: Callable[[bytes], torch.Tensor], files: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for data in files:
            decode(data)
        best = min(best, time.perf_counter() - started)
    return best / len(files) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mmray-decode-") as tmp:
        config = ShapesData(source="shapes", root=tmp, images=args.images, val_images=max(1, args.images // 10),
                            image_size=args.image_size)  # fmt: skip
        generate_shapes(config, tmp)
        jpegs = [path.read_bytes() for path in sorted(Path(tmp).rglob("*.jpg"))]
    pngs = []
    for data in jpegs:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    results = {}
    for kind, files in (("jpeg", jpegs), ("png", pngs)):
        baseline = per_image_us(torchvision_decode, files, args.repeats)
        mmray = per_image_us(decode_rgb, files, args.repeats)
        pillow = per_image_us(pillow_decode, files, args.repeats)
        results[kind] = {"files": len(files), "torchvision_us": round(baseline, 1), "decode_rgb_us": round(mmray, 1),
                         "pillow_us": round(pillow, 1), "decode_rgb_ratio": round(mmray / baseline, 3),
                         "pillow_ratio": round(pillow / baseline, 3)}  # fmt: skip
        print(f"{kind} {args.image_size}px: torchvision {baseline:.1f} µs/image, decode_rgb {mmray:.1f} "
              f"({mmray / baseline:.2f}×), Pillow {pillow:.1f} ({pillow / baseline:.2f}×)")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
