"""The caption task (image → text): a caption decoder trained with teacher forcing and label smoothing;
evaluated by BLEU-4 and CIDEr-D of decoded captions against each image's references, beside a
nearest-neighbour baseline (the caption of the training image closest in the image tower's space)."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from mmray.config.generation import CaptionTaskConfig
from mmray.config.model import ModelSection
from mmray.config.tasks import TaskSection
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.metrics.captions import caption_scores
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.caption_search import decode_captions
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, task_model
from mmray.tasks.registry import register_task

EXAMPLES_FILE = "captions.json"
SHOWN_EXAMPLES = 24


def as_caption_decoder(model: nn.Module) -> CaptionDecoder:
    return task_model(model, CaptionDecoder, "caption")


def references(split: SplitTensors, count: int, processor: Processor) -> list[list[str]]:
    """Every caption of each of the first `count` images, as text."""
    texts = processor.tokenizer.decode(split.caption_ids)
    offsets = split.caption_offsets.tolist()
    return [texts[offsets[i] : offsets[i + 1]] for i in range(count)]


@torch.no_grad()
def pooled_features(model: CaptionDecoder, images: torch.Tensor, context: EvalContext) -> torch.Tensor:
    """uint8 images (N, 3, S, S) → L2-normalised pooled image-tower vectors (N, D) on the CPU."""
    vectors = []
    for start in range(0, images.shape[0], context.batch_size):
        batch = context.normalized_images(images[start : start + context.batch_size])
        vectors.append(F.normalize(model.encoder.encode_image_features(batch).pooled.float(), dim=-1).cpu())
    return torch.cat(vectors)


class CaptionTask(Task):
    batch_fields = ("images", "caption_ids", "caption_mask")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        if not isinstance(config, CaptionTaskConfig):
            raise TypeError(f"expected a caption task config, got kind {config.kind!r}")
        self.caption_config = config

    def _loss(self, logits: torch.Tensor, ids: torch.Tensor, smoothing: float) -> torch.Tensor:
        """logits (B, L - 1, V) predicting ids[:, 1:] (B, L - 1); PAD positions ignored."""
        targets = ids[:, 1:]
        return F.cross_entropy(
            logits.float().transpose(1, 2),
            targets,
            ignore_index=self.processor.tokenizer.pad_id,
            label_smoothing=smoothing,
        )

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        with context.autocast():
            logits = model(batch["images"], batch["caption_ids"])
        return StepOutput(self._loss(logits, batch["caption_ids"], self.caption_config.label_smoothing))

    @torch.no_grad()
    def _decode(self, decoder: CaptionDecoder, split: SplitTensors, count: int, context: EvalContext) -> list[str]:
        settings = self.caption_config.evaluation
        captions: list[str] = []
        for start in range(0, count, context.batch_size):
            images = context.normalized_images(split.images[start : min(start + context.batch_size, count)])
            ids = decode_captions(decoder, images, settings.beam, settings.length_penalty)
            captions += self.processor.tokenizer.decode(ids)
        return captions

    @torch.no_grad()
    def _validation_loss(self, decoder: CaptionDecoder, split: SplitTensors, count: int, context: EvalContext) -> float:
        """Teacher-forced cross-entropy (no smoothing) of the first caption of each evaluated image."""
        first = split.caption_offsets[:count]
        total = 0.0
        for start in range(0, count, context.batch_size):
            stop = min(start + context.batch_size, count)
            images = context.normalized_images(split.images[start:stop])
            ids = split.caption_ids[first[start:stop]].to(context.device)
            total += float(self._loss(decoder(images, ids), ids, 0.0)) * (stop - start)
        return total / count

    def _nearest_neighbour_captions(
        self, decoder: CaptionDecoder, split: SplitTensors, count: int, context: EvalContext
    ) -> list[str] | None:
        train = context.reference
        if train is None or not self.caption_config.evaluation.nearest_neighbour_baseline:
            return None
        queries = pooled_features(decoder, split.images[:count], context)  # (n, D)
        keys = pooled_features(decoder, train.images, context)  # (N_train, D)
        nearest = (queries @ keys.T).argmax(dim=1)  # (n,)
        first = train.caption_offsets[nearest]
        return self.processor.tokenizer.decode(train.caption_ids[first])

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        decoder = as_caption_decoder(model)
        was_training = decoder.training
        decoder.eval()
        try:
            count = min(self.caption_config.evaluation.images, split.num_images)
            refs = references(split, count, self.processor)
            candidates = self._decode(decoder, split, count, context)
            metrics = {
                **caption_scores(candidates, refs),
                "val_loss": self._validation_loss(decoder, split, count, context),
            }
            baseline = self._nearest_neighbour_captions(decoder, split, count, context)
        finally:
            decoder.train(was_training)
        if baseline is not None:
            metrics.update({f"nn_{key}": value for key, value in caption_scores(baseline, refs).items()})
        examples = [
            {"image_id": int(split.image_ids[i]), "caption": candidates[i], "references": refs[i]}
            | ({"nearest_neighbour": baseline[i]} if baseline is not None else {})
            for i in range(min(SHOWN_EXAMPLES, count))
        ]
        return metrics, {EXAMPLES_FILE: json.dumps(examples, indent=2).encode()}

    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        return self.evaluation_report(model, split, context)[0]

    @property
    def score(self) -> Score:
        return Score("cider_d", "max")


register_task("caption", CaptionTask)
