"""Measuring a text → image model on a validation split: the R-precision of samples for the first caption of
the first images under a trained retrieval model, beside the real images' (the ceiling), sample diversity and a
grid of samples. Each row's noise comes from its own seeded generator, so ranks can share the R-precision rows
and still report the figures of one process; the small grid is drawn on every rank."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmray import storage
from mmray.artifacts.manifests import resolve_model_bundle
from mmray.artifacts.model_bundle import LoadedBundle, open_bundle, read_processor
from mmray.config.generation import SampleEvaluationConfig
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.errors import BundleError
from mmray.figures import plt, png_bytes, wrap_text
from mmray.metrics.samples import r_precision, sample_diversity
from mmray.models.embedding import as_embedding_model
from mmray.models.registry import model_kind
from mmray.models.text_to_image import TextToImageModel
from mmray.tasks.base import EvalContext

GRID_FILE = "samples.png"


def first_captions(split: SplitTensors, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and masks (n, L) of the first caption of each of the first `count` images."""
    first = split.caption_offsets[: min(count, split.num_images)]
    return split.caption_ids[first], split.caption_mask[first]


@torch.no_grad()
def generate(
    model: TextToImageModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    context: EvalContext,
    temperature: float,
    seed: int,
    rows: range,
) -> torch.Tensor:
    """One sample for each caption of `rows` of (n, L) ids → [0, 1] images (len(rows), 3, S, S) on the CPU;
    a row's noise depends on the seed and its index only."""
    samples = []
    for start in range(rows.start, rows.stop, context.batch_size):
        stop = min(start + context.batch_size, rows.stop)
        condition = model.condition(ids[start:stop].to(context.device), mask[start:stop].to(context.device))
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + row) for row in range(start, stop)]
        samples.append(model.sample(condition, temperature, generators).float().cpu())
    if not samples:
        return torch.empty(0, 3, model.image_size, model.image_size)
    return torch.cat(samples)


def bound_evaluation(config: SampleEvaluationConfig) -> SampleEvaluationConfig:
    """The config with its evaluator resolved to an absolute bundle URI (workers run elsewhere), after
    checking on the driver that it is a bundle whose model embeds images and texts."""
    if config.evaluator is None:
        return config
    uri = storage.absolute_uri(resolve_model_bundle(config.evaluator))
    _, model_config = read_processor(uri)
    if "embed" not in model_kind(model_config.kind).serves:
        raise BundleError(
            f"evaluation.evaluator {config.evaluator} holds a {model_config.kind!r} model; R-precision needs a "
            "model that embeds images and texts into one space (a retrieval run's dual_encoder bundle)"
        )
    return config.model_copy(update={"evaluator": uri})


class SampleEvaluation:
    """The evaluation of one task's samples; the evaluator bundle is opened once per process."""

    def __init__(self, config: SampleEvaluationConfig, processor: Processor) -> None:
        self.config = config
        self.processor = processor
        self._evaluator: LoadedBundle | None = None

    def evaluator(self) -> LoadedBundle | None:
        if self.config.evaluator is None:
            return None
        if self._evaluator is None:
            self._evaluator = open_bundle(self.config.evaluator)
            as_embedding_model(self._evaluator.model, f"the evaluator {self.config.evaluator}")
        return self._evaluator

    def _embed_images(self, evaluator: LoadedBundle, images: torch.Tensor, context: EvalContext) -> torch.Tensor:
        """[0, 1] images (b, 3, S, S) → the evaluator's embeddings (b, E), at the evaluator's image size."""
        size = evaluator.processor.image.size
        batch = images.to(context.device)
        if batch.shape[-1] != size:
            batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return as_embedding_model(evaluator.model).embed_images(evaluator.processor.normalize_unit(batch))

    def _embed_texts(self, evaluator: LoadedBundle, texts: list[str], context: EvalContext) -> torch.Tensor:
        tokens = evaluator.processor.tokenize(texts)
        return as_embedding_model(evaluator.model).embed_texts(
            tokens.ids.to(context.device), tokens.mask.to(context.device)
        )

    def evaluate(
        self, model: TextToImageModel, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        """R-precision of samples and of the real images (with an evaluator), sample diversity, the grid."""
        config = self.config
        metrics: dict[str, float] = {}
        ids, mask = first_captions(split, config.images)
        texts = self.processor.tokenizer.decode(ids)
        evaluator = self.evaluator()
        if evaluator is not None:
            evaluator.model.to(context.device)
            count = ids.shape[0]

            def sample_rows(start: int, stop: int) -> torch.Tensor:
                samples = generate(model, ids, mask, context, config.temperature, config.seed, range(start, stop))
                return self._embed_images(evaluator, samples, context)

            # each rank draws and embeds its share of the rows; each (n, E)
            text_vectors = context.rows(
                lambda start, stop: self._embed_texts(evaluator, texts[start:stop], context), count
            )
            sample_vectors = context.rows(sample_rows, count)
            real_vectors = context.rows(
                lambda start, stop: self._embed_images(evaluator, split.images[start:stop].float() / 255.0, context),
                count,
            )
            candidates = min(config.candidates, count)
            metrics["r_precision"] = r_precision(sample_vectors, text_vectors, candidates, config.seed)
            metrics["real_r_precision"] = r_precision(real_vectors, text_vectors, candidates, config.seed)
            metrics["r_precision_candidates"] = float(candidates)
        rows = min(config.grid_captions, ids.shape[0])
        grid_ids = ids[:rows].repeat_interleave(config.grid_samples, dim=0)
        grid_mask = mask[:rows].repeat_interleave(config.grid_samples, dim=0)
        grid_seed = config.seed + 1  # other noise than the R-precision samples
        grid = generate(model, grid_ids, grid_mask, context, config.temperature, grid_seed, range(grid_ids.shape[0]))
        grid = grid.view(rows, config.grid_samples, *grid.shape[1:])  # (rows, M, 3, S, S)
        if config.grid_samples >= 2:
            metrics["sample_diversity"] = sample_diversity(grid)
        real_rows = split.images[:rows].float() / 255.0
        if real_rows.shape[-1] != grid.shape[-1]:
            real_rows = F.interpolate(real_rows, size=grid.shape[-2:], mode="bilinear", antialias=True)
        figure = sample_grid_png(texts[:rows], grid, real_rows)
        return metrics, {GRID_FILE: figure}


def sample_grid_png(captions: Sequence[str], samples: torch.Tensor, real: torch.Tensor | None = None) -> bytes:
    """captions: N texts; samples: (N, M, 3, S, S) in [0, 1]; real: (N, 3, S, S) in [0, 1] or None."""
    rows, per_row = samples.shape[0], samples.shape[1]
    if len(captions) != rows:
        raise ValueError(f"{len(captions)} captions for {rows} rows of samples")
    columns = per_row + (real is not None)
    figure, axes = plt.subplots(rows, columns + 2, figsize=(1.3 * (columns + 2), 1.3 * rows + 0.4), squeeze=False)
    for row in range(rows):
        axes[row][0].text(0.0, 0.5, wrap_text(captions[row], 36), fontsize=6.5, va="center", clip_on=False)
        images = ([real[row]] if real is not None else []) + list(samples[row])
        for column in range(columns + 2):
            axes[row][column].set_axis_off()
        for column, image in enumerate(images):
            axis = axes[row][column + 2]
            axis.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().float().numpy(), interpolation="nearest")
            if row == 0:
                axis.set_title("real" if real is not None and column == 0 else "sample", fontsize=7)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.05, hspace=0.08)
    return png_bytes(figure)
