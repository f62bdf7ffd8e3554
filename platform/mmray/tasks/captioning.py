"""The caption task (image → text): a caption decoder trained with teacher forcing and label smoothing;
evaluated by BLEU-4 and CIDEr-D of decoded captions against each image's references, beside a
nearest-neighbour baseline (the caption of the training image closest in the image tower's space)."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from mmray.config.base import of_kind
from mmray.config.generation import CaptionTaskConfig
from mmray.config.model import ModelSection
from mmray.config.tasks import TaskSection
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.distributed import gather_objects, shard_range
from mmray.metrics.captions import caption_scores
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.caption_search import decode_captions
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, eval_mode, task_model
from mmray.tasks.registry import register_task

EXAMPLES_FILE = "captions.json"
SHOWN_EXAMPLES = 24


def references(split: SplitTensors, count: int, processor: Processor) -> list[list[str]]:
    """Every caption of each of the first `count` images, as text."""
    texts = processor.tokenizer.decode(split.caption_ids)
    offsets = split.caption_offsets.tolist()
    return [texts[offsets[i] : offsets[i + 1]] for i in range(count)]


def pooled_features(model: CaptionDecoder, images: torch.Tensor, context: EvalContext) -> torch.Tensor:
    """uint8 images (N, 3, S, S) → L2-normalised pooled image-tower vectors (N, D) on the CPU."""
    return context.image_rows(
        lambda pixels: F.normalize(model.encoder.encode_image_features(pixels).pooled, dim=-1), images
    )


class CaptionTask(Task):
    batch_fields = ("images", "caption_ids", "caption_mask")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        self.caption_config = of_kind(config, CaptionTaskConfig, "a caption task")
        self._cached_keys: tuple[SplitTensors, torch.Tensor] | None = None

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
    def _decode(
        self, decoder: CaptionDecoder, split: SplitTensors, count: int, context: EvalContext
    ) -> tuple[list[str], float]:
        """Captions of the first `count` images, each rank decoding its share, and the teacher-forced
        cross-entropy (no smoothing) of each image's first caption."""
        settings = self.caption_config.evaluation
        first = split.caption_offsets[:count]
        captions: list[str] = []
        total = 0.0
        rows = shard_range(count, context.rank, context.world)
        for start in range(rows.start, rows.stop, context.batch_size):
            stop = min(start + context.batch_size, rows.stop)
            images = context.normalized_images(split.images[start:stop])  # (b, 3, S, S)
            decoded = decode_captions(decoder, images, settings.beam, settings.length_penalty)
            captions += self.processor.tokenizer.decode(decoded)
            ids = split.caption_ids[first[start:stop]].to(context.device)
            total += float(self._loss(decoder(images, ids), ids, 0.0)) * (stop - start)
        gathered = [caption for share in gather_objects(captions) for caption in share]
        return gathered, float(sum(gather_objects(total))) / count

    def _reference_keys(self, decoder: CaptionDecoder, train: SplitTensors, context: EvalContext) -> torch.Tensor:
        """The training images' pooled vectors (N_train, D): encoded once per evaluation, and once per run
        while the image tower is frozen."""
        cached = self._cached_keys
        if cached is not None and cached[0] is train:
            return cached[1]
        keys = pooled_features(decoder, train.images, context)  # (N_train, D)
        frozen = not any(p.requires_grad for p in decoder.encoder.image_encoder.parameters())
        self._cached_keys = (train, keys) if frozen else None
        return keys

    def _nearest_neighbour_captions(
        self, decoder: CaptionDecoder, split: SplitTensors, count: int, context: EvalContext
    ) -> list[str] | None:
        train = context.reference
        if train is None or not self.caption_config.evaluation.nearest_neighbour_baseline:
            return None
        queries = pooled_features(decoder, split.images[:count], context)  # (n, D)
        nearest = (queries @ self._reference_keys(decoder, train, context).T).argmax(dim=1)  # (n,)
        first = train.caption_offsets[nearest]
        return self.processor.tokenizer.decode(train.caption_ids[first])

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        decoder = task_model(model, CaptionDecoder, "caption")
        with eval_mode(decoder):
            count = min(self.caption_config.evaluation.images, split.num_images)
            refs = references(split, count, self.processor)
            candidates, val_loss = self._decode(decoder, split, count, context)
            metrics = {**caption_scores(candidates, refs), "val_loss": val_loss}
            baseline = self._nearest_neighbour_captions(decoder, split, count, context)
        if baseline is not None:
            metrics.update({f"nn_{key}": value for key, value in caption_scores(baseline, refs).items()})
        examples = [
            {"image_id": int(split.image_ids[i]), "caption": candidates[i], "references": refs[i]}
            | ({"nearest_neighbour": baseline[i]} if baseline is not None else {})
            for i in range(min(SHOWN_EXAMPLES, count))
        ]
        return metrics, {EXAMPLES_FILE: json.dumps(examples, indent=2).encode()}

    @property
    def score(self) -> Score:
        return Score("cider_d", "max")


register_task("caption", CaptionTask)
