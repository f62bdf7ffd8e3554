"""Using generation bundles: images from captions (sampling, grids, interpolation between captions) and
captions from images (greedy or beam search). Shared by `mmray generate`, `mmray caption` and serving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.data.processor import Processor
from mmray.devices import pick_device
from mmray.errors import BundleError, QueryError
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.caption_search import decode_captions
from mmray.models.text_to_image import TextToImageModel, as_text_to_image

MAX_SAMPLES = 64
MAX_BEAM = 16
MAX_SEED = 2**63 - 1


def _check_noise(seed: int, temperature: float) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise QueryError(f"seed must lie in 0..2**63 - 1, got {seed}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise QueryError(f"temperature must be a finite number above 0, got {temperature}")


@dataclass
class ImageGenerator:
    """A text → image bundle on a device."""

    bundle: LoadedBundle
    model: TextToImageModel
    device: torch.device

    @classmethod
    def open(cls, uri: str, device: str = "cpu") -> ImageGenerator:
        where = pick_device(device)
        bundle = open_bundle(uri)
        model = as_text_to_image(bundle.model, f"the bundle {uri}")
        bundle.model.to(where)
        return cls(bundle, model, where)

    @torch.no_grad()
    def conditions(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions → conditioning vectors (T, E); captions longer than the tokenizer's limit are cut."""
        if not texts:
            raise QueryError("no caption given")
        for i, text in enumerate(texts):
            if not text.strip():
                raise QueryError(f"caption {i + 1} is empty")
        tokens = self.bundle.processor.tokenize(list(texts))
        return self.model.condition(tokens.ids.to(self.device), tokens.mask.to(self.device))

    def sample(self, texts: Sequence[str], per_text: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """`per_text` samples of each caption → [0, 1] images (T, n, 3, S, S) on the CPU; equal seeds, equal images."""
        if not 1 <= per_text <= MAX_SAMPLES:
            raise QueryError(f"samples per caption must be between 1 and {MAX_SAMPLES}, got {per_text}")
        _check_noise(seed, temperature)
        condition = self.conditions(texts).repeat_interleave(per_text, dim=0)  # (T·n, E)
        images = self.model.sample(condition, temperature, torch.Generator().manual_seed(seed)).float().cpu()
        return images.view(len(texts), per_text, *images.shape[1:])

    def interpolate(self, first: str, second: str, steps: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """Images (steps, 3, S, S) in [0, 1] along the line between two captions' conditions, one noise draw for all."""
        if not 2 <= steps <= MAX_SAMPLES:
            raise QueryError(f"interpolation steps must be between 2 and {MAX_SAMPLES}, got {steps}")
        _check_noise(seed, temperature)
        ends = self.conditions([first, second])  # (2, E)
        weights = torch.linspace(0.0, 1.0, steps, device=self.device)[:, None]  # (steps, 1)
        condition = (1 - weights) * ends[0] + weights * ends[1]  # (steps, E)
        images = [
            self.model.sample(condition[row : row + 1], temperature, torch.Generator().manual_seed(seed)).float().cpu()
            for row in range(steps)
        ]  # the same seed: the same noise for every step
        return torch.cat(images)


@torch.no_grad()
def caption_pixels(
    model: CaptionDecoder,
    processor: Processor,
    pixels: torch.Tensor,
    device: torch.device,
    beam: int = 1,
    length_penalty: float = 0.6,
    max_length: int | None = None,
    chunk_rows: int = 256,
) -> list[str]:
    """uint8 images (N, 3, S, S) → one caption each, decoded `chunk_rows` images at a time."""
    texts: list[str] = []
    for start in range(0, pixels.shape[0], chunk_rows):
        images = processor.normalize(pixels[start : start + chunk_rows].to(device))  # (b, 3, S, S)
        ids = decode_captions(model, images, beam, length_penalty, max_length)
        texts += processor.tokenizer.decode(ids.cpu())
    return texts


@dataclass
class Captioner:
    """An image → text bundle on a device."""

    bundle: LoadedBundle
    model: CaptionDecoder
    device: torch.device

    @classmethod
    def open(cls, uri: str, device: str = "cpu") -> Captioner:
        where = pick_device(device)
        bundle = open_bundle(uri)
        if not isinstance(bundle.model, CaptionDecoder):
            raise BundleError(f"the bundle {uri} ({type(bundle.model).__name__}) does not caption images")
        bundle.model.to(where)
        return cls(bundle, bundle.model, where)

    @torch.no_grad()
    def caption(
        self, images: Sequence[Image.Image], beam: int = 1, length_penalty: float = 0.6, max_length: int | None = None
    ) -> list[str]:
        """One caption per image; beam 1 is greedy; `max_length` counts BOS and EOS."""
        if not images:
            raise QueryError("no image given")
        if not 1 <= beam <= MAX_BEAM:
            raise QueryError(f"beam must be between 1 and {MAX_BEAM}, got {beam}")
        if max_length is not None and max_length < 2:
            raise QueryError(f"max_length must be at least 2 (BOS and one token), got {max_length}")
        processor = self.bundle.processor
        pixels = torch.stack([processor.pixels_from_pil(image) for image in images])  # (B, 3, S, S)
        return caption_pixels(self.model, processor, pixels, self.device, beam, length_penalty, max_length)
