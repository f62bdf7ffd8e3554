"""Runs every file of a directory through every in-process path that decodes an image, as its own process:
`python -m tests.support.decode_paths CORPUS OUT`. Each outcome is one JSON line on stdout, flushed before
the next path starts, so a crash (a signal exit) shows which file and path it was on; `decode_rgb`'s pixels
are saved as OUT/<file>.npy."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmray.config.serving import RequestLimits
from mmray.data.image_files import check_decodable, decode_image
from mmray.data.images import decode_rgb
from mmray.data.processor import ImageTransform, Processor
from mmray.data.tokenizers import WordTokenizer
from mmray.retrieval.embed import DecodeImages
from mmray.serving.calls import RequestError
from mmray.serving.uploads import check_image, decode_upload
from mmray.train.ray_data_feed import DecodeAndTokenize

SIZE = 24


def _processor() -> Processor:
    return Processor(ImageTransform(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), WordTokenizer.build(["a picture"], 8))


def _serving(path: Path) -> dict[str, Any]:
    limits = RequestLimits()
    data = path.read_bytes()
    try:
        check_image(data, "image", limits)
        pixels = decode_upload(data, "image", limits.max_image_pixels)
    except RequestError as exc:
        return {"ok": False, "status": exc.status, "error": exc.message}
    return {"ok": True, "shape": list(pixels.shape)}


def _embedding_task(path: Path, processor: Processor) -> dict[str, Any]:
    batch = DecodeImages(processor)({"id": np.array([1]), "uri": np.array([str(path)], dtype=object)})
    error = str(batch["error"][0])
    return {"ok": not error, "error": error, "shape": list(batch["pixels"].shape[1:])}


def _training_feed(path: Path, processor: Processor) -> dict[str, Any]:
    row = {"image_uri": [str(path)], "image_id": [1], "captions": [["a picture"]], "labels": [[0]],
           "object_count": [0], "covered_fraction": [0.0]}  # fmt: skip
    batch = DecodeAndTokenize(processor, 1)({key: np.array(value, dtype=object) for key, value in row.items()})
    kept = len(batch["image_id"])
    return {"ok": kept == 1, "shape": list(batch["image"].shape[1:]) if kept else None}


def _decoded(path: Path, out: Path) -> dict[str, Any]:
    pixels = decode_rgb(path.read_bytes(), path.name)
    np.save(out / f"{path.name}.npy", pixels.permute(1, 2, 0).numpy())
    return {"ok": True, "shape": list(pixels.shape), "dtype": str(pixels.dtype)}


def _outcome(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return run()
    except Exception as exc:  # reported, not raised: the test names every wrong kind of error
        return {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}


def main(corpus: Path, out: Path) -> None:
    processor = _processor()
    paths: dict[str, Callable[[Path], dict[str, Any]]] = {
        "decode_rgb": lambda p: _decoded(p, out),
        "processor": lambda p: {"ok": True, "shape": list(processor.pixels_from_uri(str(p)).shape)},
        "pil_image": lambda p: {"ok": True, "size": list(decode_image(p.read_bytes(), str(p)).size)},
        "check_decodable": lambda p: {"ok": next(iter(check_decodable([str(p)])))[1]},
        "embedding_task": lambda p: _embedding_task(p, processor),
        "training_feed": lambda p: _training_feed(p, processor),
        "serving": _serving,
    }
    for file in sorted(corpus.iterdir()):
        for name, run in paths.items():
            outcome = _outcome(lambda run=run, file=file: run(file))  # type: ignore[misc]
            print(json.dumps({"file": file.name, "path": name, **outcome}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
