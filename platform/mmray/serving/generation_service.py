"""Generation calls answered by a served bundle: images of captions (text → image models) and captions of
images (caption decoders). Each call keeps its own settings; captions of calls that share them are
decoded together."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image

from mmray.generators import caption_pixels
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.text_to_image import as_text_to_image
from mmray.serving.calls import CaptionCall, CaptionResult, GenerateCall, GenerateResult, RequestError
from mmray.serving.model_service import ModelService, answer_each


def png_bytes(image: torch.Tensor) -> bytes:
    """[0, 1] floats (3, S, S) → a PNG file."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@torch.inference_mode()
def generate_many(service: ModelService, calls: Sequence[GenerateCall]) -> list[GenerateResult | RequestError]:
    """Each call's samples drawn with its own seeded generator (so a seed always gives the same images)."""
    service.require("generate")
    model = as_text_to_image(service.model)
    processor = service.bundle.processor

    def answer(call: GenerateCall) -> GenerateResult:
        tokens = processor.tokenize([call.text])
        condition = model.condition(tokens.ids.to(service.device), tokens.mask.to(service.device))  # (1, E)
        generator = torch.Generator().manual_seed(call.seed)
        images = model.sample(condition.repeat(call.n, 1), call.temperature, generator).float().cpu()
        return GenerateResult([png_bytes(image) for image in images], call.seed, service.version,
                              bool(tokens.truncated[0]))  # fmt: skip

    return answer_each(calls, answer)


@torch.inference_mode()
def caption_many(service: ModelService, calls: Sequence[CaptionCall]) -> list[CaptionResult | RequestError]:
    """Images of calls with the same beam width and length limit decoded in one pass."""
    service.require("caption")
    model = service.model
    assert isinstance(model, CaptionDecoder)
    processor = service.bundle.processor

    def decode(call: CaptionCall) -> torch.Tensor:
        length = call.max_length or processor.tokenizer.max_length
        work = call.beam * length * len(call.images)
        if service.max_caption_work is not None and work > service.max_caption_work:
            raise RequestError(f"beam × max_length × images = {call.beam} × {length} × {len(call.images)} = {work} "
                               f"is more than limits.max_caption_work ({service.max_caption_work}); ask for less",
                               "beam")  # fmt: skip
        images = [service.decode(data, f"images[{i}]") for i, data in enumerate(call.images)]
        return torch.stack(images)  # (n, 3, S, S) uint8

    decoded = answer_each(calls, decode)
    groups: dict[tuple[int, int | None], list[int]] = {}
    for i, (call, pixels) in enumerate(zip(calls, decoded, strict=True)):
        if not isinstance(pixels, RequestError):
            groups.setdefault((call.beam, call.max_length), []).append(i)
    captions: dict[int, list[str]] = {}
    for (beam, max_length), members in groups.items():
        pixels = torch.cat([decoded[i] for i in members])  # type: ignore[misc]
        texts = caption_pixels(model, processor, pixels, service.device, beam, max_length=max_length,
                               chunk_rows=service.max_rows)  # fmt: skip
        at = 0
        for i in members:
            count = len(calls[i].images)
            captions[i], at = texts[at : at + count], at + count
    return [
        entry if isinstance(entry, RequestError) else CaptionResult(captions[i], service.version)
        for i, entry in enumerate(decoded)
    ]
