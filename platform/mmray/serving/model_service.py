"""One model bundle on its device, answering batches of embed, classify, generate and caption calls; no Serve
in here. Each generation call keeps its own settings; captions of calls that share them are decoded together."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from PIL import Image

from mmray.artifacts.generators import caption_pixels
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle
from mmray.devices import pick_device
from mmray.errors import MissingModalityError
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.embedding import EmbeddingModel
from mmray.models.fusion_model import FusionModel
from mmray.models.registry import model_kind
from mmray.models.text_to_image import as_text_to_image
from mmray.serving.calls import (
    CaptionCall,
    CaptionResult,
    ClassifyCall,
    ClassifyItem,
    ClassifyResult,
    EmbedCall,
    EmbedResult,
    GenerateCall,
    GenerateResult,
    RequestError,
)
from mmray.serving.predictions import describe_predictions
from mmray.serving.uploads import decode_upload

logger = logging.getLogger(__name__)
MAX_ROWS = 256  # rows one forward pass takes; a batch's rows run in chunks of this many
CallT = TypeVar("CallT")
ResultT = TypeVar("ResultT")


def answer_each(calls: Sequence[CallT], answer: Callable[[CallT], ResultT]) -> list[ResultT | RequestError]:
    """Answer calls one by one; a call's own bad input becomes its RequestError, not the batch's."""
    results: list[ResultT | RequestError] = []
    for call in calls:
        try:
            results.append(answer(call))
        except RequestError as exc:
            results.append(exc)
    return results


class ModelService:
    """A loaded bundle and what it can do (`capabilities`): `embed` for models with one embedding space,
    `classify` for fusion models with prediction heads, `generate` for text → image models, `caption` for
    caption decoders. Batched methods run the model over all their calls' inputs together, in `MAX_ROWS` chunks."""

    def __init__(
        self,
        bundle: LoadedBundle,
        device: str = "auto",
        max_image_pixels: int | None = None,
        max_caption_work: int | None = None,
    ) -> None:
        self.bundle = bundle
        self.max_image_pixels = max_image_pixels  # None: the MMRAY_MAX_IMAGE_PIXELS limit
        self.max_caption_work = max_caption_work  # beam × max_length × images of one call; None: no limit
        self.device = pick_device(device)  # auto: the replica's GPU when Serve gave it one (num_gpus)
        self.model = bundle.model.to(self.device).eval()
        logger.info("model %s (version %s) serves on %s", bundle.uri, bundle.version, self.device)
        self.capabilities = set(model_kind(bundle.model_config.kind).serves)

    @classmethod
    def open(
        cls, uri: str, device: str = "auto", max_image_pixels: int | None = None, max_caption_work: int | None = None
    ) -> ModelService:
        return cls(open_bundle(uri), device, max_image_pixels=max_image_pixels, max_caption_work=max_caption_work)

    @property
    def version(self) -> str:
        return self.bundle.version

    def info(self) -> dict[str, Any]:
        """What /v1/models shows of this model."""
        manifest = self.bundle.manifest
        return {
            "uri": self.bundle.uri,
            "model_version": self.version,
            "model_kind": manifest.get("model_kind"),
            "task_kind": manifest.get("task_kind"),
            "capabilities": sorted(self.capabilities),
            "device": str(self.device),
            "image_size": self.bundle.processor.image.size,
            "max_text_tokens": self.bundle.processor.tokenizer.max_length,
        }

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            kind, can = self.bundle.manifest.get("model_kind"), ", ".join(sorted(self.capabilities)) or "nothing served"
            raise RequestError(
                f"model {self.bundle.uri} (kind {kind!r}) cannot {capability}; it can: {can}", "model", 404
            )

    def decode(self, data: bytes, field: str) -> torch.Tensor:
        """One upload decoded and resized as the bundle's processor resizes (the path of training, indexing and
        search) -> uint8 (3, S, S); a bad one is a RequestError naming `field`."""
        processor = self.bundle.processor
        return processor.resize(decode_upload(data, field, self.max_image_pixels, processor.image.upright))

    def pixels(self, images: Sequence[bytes], field: str) -> torch.Tensor:
        """Decode and resize uploads -> uint8 (N, 3, S, S); a bad one is a RequestError naming it."""
        size = self.bundle.processor.image.size
        decoded = [self.decode(data, f"{field}[{i}]") for i, data in enumerate(images)]
        return torch.stack(decoded) if decoded else torch.zeros(0, 3, size, size, dtype=torch.uint8)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> L2-normalised float32 (N, E) on the CPU."""
        assert isinstance(self.model, EmbeddingModel)
        out = []
        for chunk in torch.split(pixels, MAX_ROWS):
            images = self.bundle.processor.normalize(chunk.to(self.device))  # (b, 3, S, S)
            out.append(self.model.embed_images(images).float().cpu())  # (b, E)
        return torch.cat(out) if out else torch.zeros(0, self.model.embed_dim)

    @torch.inference_mode()
    def embed_text_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """Texts -> L2-normalised float32 (T, E) on the CPU, and which texts were truncated."""
        assert isinstance(self.model, EmbeddingModel)
        if not texts:
            return torch.zeros(0, self.model.embed_dim), []
        tokens = self.bundle.processor.tokenize(list(texts))
        out = []
        for ids, mask in zip(torch.split(tokens.ids, MAX_ROWS), torch.split(tokens.mask, MAX_ROWS), strict=True):
            ids, mask = ids.to(self.device), mask.to(self.device)  # (b, L)
            out.append(self.model.embed_texts(ids, mask).float().cpu())  # (b, E)
        return torch.cat(out), [bool(t) for t in tokens.truncated]

    def embed_many(self, calls: Sequence[EmbedCall]) -> list[EmbedResult | RequestError]:
        """Every call's texts and images embedded in one pass; each call gets its own rows back."""
        self.require("embed")
        checked = answer_each(calls, lambda call: (call, self.pixels(call.images, "images")))
        good = [entry for entry in checked if not isinstance(entry, RequestError)]
        all_texts = [text for call, _ in good for text in call.texts]
        text_vectors, truncated = self.embed_text_batch(all_texts)
        image_vectors = self.embed_pixels(torch.cat([pixels for _, pixels in good])) if good else torch.zeros(0)
        results: list[EmbedResult | RequestError] = []
        text_at = image_at = 0
        for entry in checked:
            if isinstance(entry, RequestError):
                results.append(entry)
                continue
            call, pixels = entry
            texts, images = len(call.texts), pixels.shape[0]
            results.append(
                EmbedResult(
                    text_vectors=text_vectors[text_at : text_at + texts].numpy(),
                    image_vectors=image_vectors[image_at : image_at + images].numpy(),
                    truncated=[i for i, cut in enumerate(truncated[text_at : text_at + texts]) if cut],
                    model_version=self.version,
                )
            )
            text_at, image_at = text_at + texts, image_at + images
        return results

    @torch.inference_mode()
    def _predict(self, pixels: torch.Tensor | None, texts: list[str] | None) -> dict[str, torch.Tensor]:
        """Head outputs for rows that all have the same modalities -> name: (N, O) on the CPU."""
        assert isinstance(self.model, FusionModel)
        rows = pixels.shape[0] if pixels is not None else len(texts or [])
        tokens = self.bundle.processor.tokenize(texts) if texts is not None else None
        chunks: dict[str, list[torch.Tensor]] = {}
        for start in range(0, rows, MAX_ROWS):
            part = slice(start, start + MAX_ROWS)
            images = self.bundle.processor.normalize(pixels[part].to(self.device)) if pixels is not None else None
            ids = tokens.ids[part].to(self.device) if tokens is not None else None  # (b, L)
            mask = tokens.mask[part].to(self.device) if tokens is not None else None  # (b, L)
            for name, values in self.model(images, ids, mask).predictions.items():
                chunks.setdefault(name, []).append(values.float().cpu())  # (b, O)
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    def classify_many(self, calls: Sequence[ClassifyCall]) -> list[ClassifyResult | RequestError]:
        """Rows of all calls predicted together by the modalities they carry; described with each call's settings."""
        self.require("classify")
        assert self.bundle.task_config is not None
        decoded = answer_each(calls, self._decode_items)
        groups: dict[tuple[bool, bool], list[tuple[int, int]]] = {}
        for call_index, entry in enumerate(decoded):
            if isinstance(entry, RequestError):
                continue
            for item_index, (pixels, text) in enumerate(entry):
                groups.setdefault((pixels is not None, text is not None), []).append((call_index, item_index))
        outputs: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        failed: dict[int, RequestError] = {}
        for (has_image, has_text), members in groups.items():
            rows = [decoded[c][i] for c, i in members]  # type: ignore[index]
            pixels = torch.stack([p for p, _ in rows if p is not None]) if has_image else None
            texts = [str(t) for _, t in rows] if has_text else None
            try:
                predicted = self._predict(pixels, texts)
            except MissingModalityError as exc:
                for c, i in members:
                    failed.setdefault(c, RequestError(str(exc), f"items[{i}]"))
                continue
            for row, key in enumerate(members):
                outputs[key] = {name: values[row] for name, values in predicted.items()}
        results: list[ClassifyResult | RequestError] = []
        for call_index, (call, entry) in enumerate(zip(calls, decoded, strict=True)):
            if isinstance(entry, RequestError) or call_index in failed:
                results.append(entry if isinstance(entry, RequestError) else failed[call_index])
                continue
            described = [
                describe_predictions(self.bundle.task_config, outputs[(call_index, i)], call.top_k, call.threshold)
                for i in range(len(call.items))
            ]
            results.append(ClassifyResult(described, self.version))
        return results

    def probe(self) -> None:
        """Answer one small call of every capability (a text, a blank image) or raise what went wrong: a
        bundle that loads but cannot answer is refused before it serves."""
        size = self.bundle.processor.image.size
        blank = io.BytesIO()
        Image.new("RGB", (size, size)).save(blank, format="PNG")
        image = blank.getvalue()
        calls: dict[str, Callable[[], list[Any]]] = {
            "embed": lambda: self.embed_many([EmbedCall(["a probe"], [image])]),
            "classify": lambda: self.classify_many([ClassifyCall([ClassifyItem(image, "a probe")])]),
            "generate": lambda: self.generate_many([GenerateCall("a probe", 1, 1.0, 0)]),
            "caption": lambda: self.caption_many([CaptionCall([image], 1, 4)]),
        }
        for capability in sorted(self.capabilities):
            (answer,) = calls[capability]()
            if isinstance(answer, RequestError):
                raise RuntimeError(f"{capability} probe failed: {answer.message}")

    @torch.inference_mode()
    def generate_many(self, calls: Sequence[GenerateCall]) -> list[GenerateResult | RequestError]:
        """Each call's samples drawn with its own seeded generator (so a seed always gives the same images)."""
        self.require("generate")
        model = as_text_to_image(self.model)
        processor = self.bundle.processor

        def answer(call: GenerateCall) -> GenerateResult:
            tokens = processor.tokenize([call.text])
            condition = model.condition(tokens.ids.to(self.device), tokens.mask.to(self.device))  # (1, E)
            generator = torch.Generator().manual_seed(call.seed)
            images = model.sample(condition.repeat(call.n, 1), call.temperature, generator).float().cpu()
            return GenerateResult([image_png(image) for image in images], call.seed, self.version,
                                  bool(tokens.truncated[0]))  # fmt: skip

        return answer_each(calls, answer)

    @torch.inference_mode()
    def caption_many(self, calls: Sequence[CaptionCall]) -> list[CaptionResult | RequestError]:
        """Images of calls with the same beam width and length limit decoded in one pass."""
        self.require("caption")
        model = self.model
        assert isinstance(model, CaptionDecoder)
        processor = self.bundle.processor

        def decode(call: CaptionCall) -> torch.Tensor:
            length = call.max_length or processor.tokenizer.max_length
            work = call.beam * length * len(call.images)
            if self.max_caption_work is not None and work > self.max_caption_work:
                raise RequestError(f"beam × max_length × images = {call.beam} × {length} × {len(call.images)} = {work} "
                                   f"is more than limits.max_caption_work ({self.max_caption_work}); ask for less",
                                   "beam")  # fmt: skip
            images = [self.decode(data, f"images[{i}]") for i, data in enumerate(call.images)]
            return torch.stack(images)  # (n, 3, S, S) uint8

        decoded = answer_each(calls, decode)
        groups: dict[tuple[int, int | None], list[int]] = {}
        for i, (call, pixels) in enumerate(zip(calls, decoded, strict=True)):
            if not isinstance(pixels, RequestError):
                groups.setdefault((call.beam, call.max_length), []).append(i)
        captions: dict[int, list[str]] = {}
        for (beam, max_length), members in groups.items():
            pixels = torch.cat([decoded[i] for i in members])  # type: ignore[misc]
            texts = caption_pixels(model, processor, pixels, self.device, beam, max_length=max_length,
                                   chunk_rows=MAX_ROWS)  # fmt: skip
            at = 0
            for i in members:
                count = len(calls[i].images)
                captions[i], at = texts[at : at + count], at + count
        return [
            entry if isinstance(entry, RequestError) else CaptionResult(captions[i], self.version)
            for i, entry in enumerate(decoded)
        ]

    def _decode_items(self, call: ClassifyCall) -> list[tuple[torch.Tensor | None, str | None]]:
        rows = []
        for i, item in enumerate(call.items):
            if item.image is None and item.text is None:
                raise RequestError("needs an image, a text, or both", f"items[{i}]")
            pixels = self.decode(item.image, f"items[{i}].image") if item.image else None
            rows.append((pixels, item.text))
        return rows


def image_png(image: torch.Tensor) -> bytes:
    """[0, 1] floats (3, S, S) → a PNG file."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
