"""The Processor: one preprocessing path (read → decode → resize → normalise; tokenise) for training,
evaluation, indexing and serving, saved in every model bundle."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError
from torchvision.transforms.v2 import functional as tvf

from mmray import storage
from mmray.config.base import first_problem
from mmray.config.model import LEGACY_ORIENTATION, Orientation
from mmray.data.images import decode_rgb, resize_square, turn_upright
from mmray.data.tokenizers import HF_TOKENIZER_DIR, WORD_TOKENIZER_FILE, TokenBatch, Tokenizer, WordTokenizer
from mmray.errors import BundleError, ImageDecodeError, StorageError, json_object, reading

PROCESSOR_FILE = "processor.json"


ResizeMode = Literal["stretch", "center_crop"]


@dataclass(frozen=True)
class ImageTransform:
    """Turn upright by the EXIF orientation tag (`orientation="exif"`) or keep the stored pixels, square
    resize to `size` (`resize`: stretch the whole image, or keep its aspect and cut out the centre), then
    per-channel standardisation with `mean` / `std` on [0, 1] values."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeMode = "stretch"
    orientation: Orientation = "exif"

    @property
    def upright(self) -> bool:
        return self.orientation == "exif"

    def description(self) -> dict[str, Any]:
        """What preprocessing depends on; the settings bundles before them lacked are left out at the value
        those bundles had, so their fingerprints stay."""
        content = asdict(self)
        if self.resize == "stretch":
            content.pop("resize")
        if self.orientation == LEGACY_ORIENTATION:
            content.pop("orientation")
        return content


class Processor:
    """Turns raw images and texts into model inputs: uint8 pixels, normalised floats, token ids."""

    def __init__(self, image: ImageTransform, tokenizer: Tokenizer) -> None:
        self.image = image
        self.tokenizer = tokenizer

    def pixels_from_bytes(self, data: bytes, name: str = "<bytes>") -> torch.Tensor:
        """Encoded image bytes → uint8 (3, S, S); raises ImageDecodeError naming `name`."""
        return self.resize(decode_rgb(data, name, upright=self.image.upright))

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A decoded uint8 (3, H, W) image → (3, S, S), by this processor's resize mode."""
        return resize_square(pixels, self.image.size, self.image.resize)

    def pixels_from_uri(self, uri: str) -> torch.Tensor:
        """A stored image (path or s3:// URI) → uint8 (3, S, S)."""
        return self.pixels_from_bytes(storage.read_bytes(uri), uri)

    def pixels_or_reason(self, uri: str) -> torch.Tensor | str:
        """`pixels_from_uri`, or why the image could not be read. -> (3, S, S) uint8"""
        try:
            return self.pixels_from_uri(uri)
        except (ImageDecodeError, StorageError) as exc:
            return str(exc)

    def pixels_from_pil(self, image: Image.Image) -> torch.Tensor:
        """A PIL image → uint8 (3, S, S), turned by its EXIF orientation (if it has one) as the processor does."""
        rgb = image.convert("RGB")  # a copy, with the image's info (its EXIF) kept
        if self.image.upright:
            turn_upright(rgb)
        return self.resize(tvf.pil_to_tensor(rgb))

    def array_from_uri(self, uri: str) -> np.ndarray:
        """`pixels_from_uri` as a NumPy array, for Ray Data and the object store. -> (3, S, S) uint8"""
        return self.pixels_from_uri(uri).numpy()

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) → float32 (B, 3, S, S) on the same device, standardised per channel."""
        mean = torch.tensor(self.image.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std  # (B, 3, S, S)

    def unit_pixels(self, normalized: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize`, as floats in [0, 1]: (B, 3, S, S) → (B, 3, S, S)."""
        mean = torch.tensor(self.image.mean, dtype=torch.float32, device=normalized.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image.std, dtype=torch.float32, device=normalized.device).view(1, 3, 1, 1)
        return (normalized.float() * std + mean).clamp(0.0, 1.0)

    def normalize_unit(self, pixels: torch.Tensor) -> torch.Tensor:
        """Floats in [0, 1] (B, 3, S, S), e.g. generated images → standardised like `normalize`."""
        return self.normalize(pixels * 255.0)

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.tokenizer.encode(texts)

    def fingerprint(self) -> str:
        """Hash of the image transform and the tokenizer: equal fingerprints preprocess identically."""
        content = json.dumps(self.image.description(), sort_keys=True) + "|" + self.tokenizer.fingerprint()
        return hashlib.sha256(content.encode()).hexdigest()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        description = {"image": self.image.description(), "tokenizer": self.tokenizer.kind}
        (directory / PROCESSOR_FILE).write_text(json.dumps(description, indent=2))
        self.tokenizer.save(directory)

    @classmethod
    def load(cls, directory: Path) -> Processor:
        path = directory / PROCESSOR_FILE
        if not path.is_file():
            raise BundleError(f"{directory} has no {PROCESSOR_FILE}")
        with reading(path, BundleError):
            description = json_object(path.read_text())
            image = {"resize": "stretch", "orientation": LEGACY_ORIENTATION, **description["image"]}
            try:
                transform = _TRANSFORM.validate_python(image)
            except ValidationError as exc:
                raise BundleError(f"{path} is damaged or not what mmray wrote ({first_problem(exc)})") from None
            kind = str(description["tokenizer"])
        return cls(transform, load_tokenizer(directory, kind))


_TRANSFORM = TypeAdapter(ImageTransform)


def load_tokenizer(directory: Path, kind: str) -> Tokenizer:
    """The tokenizer saved in `directory` by `Tokenizer.save`."""
    if kind == WordTokenizer.kind:
        if not (directory / WORD_TOKENIZER_FILE).is_file():
            raise BundleError(f"{directory} has no {WORD_TOKENIZER_FILE}")
        with reading(directory / WORD_TOKENIZER_FILE, BundleError):
            return WordTokenizer.load(directory)
    if kind == "huggingface":
        from mmray.data.hf_tokenizer import load_hf_tokenizer

        with reading(directory / HF_TOKENIZER_DIR, BundleError):
            return load_hf_tokenizer(str(directory / HF_TOKENIZER_DIR))
    raise BundleError(f"{directory}: unknown tokenizer kind {kind!r}")
