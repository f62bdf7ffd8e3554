"""The retrieval task: image and text towers trained into one space with a representation loss,
evaluated by COCO-protocol Recall@K both ways and ranked by its mean."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.model import DualEncoderConfig, HfDualEncoderConfig, ModelSection
from mmray.config.tasks import RetrievalTaskConfig, TaskSection
from mmray.data.coco import CocoDataset
from mmray.data.label_order import labels_for_classes
from mmray.data.processor import Processor
from mmray.data.tensors import IMAGE_FEATURES, TEXT_FEATURES, SplitTensors
from mmray.errors import ConfigError
from mmray.losses.representation import RepresentationLoss, freeze_unread_logit_parameters
from mmray.metrics.retrieval import retrieval_metrics
from mmray.models.dual_encoder import DualEncoder
from mmray.models.embedding import as_embedding_model
from mmray.models.procrustes import start_from_procrustes
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, eval_mode, task_model
from mmray.tasks.feature_cache import FrozenTowers, cached_features, features_key, is_frozen
from mmray.tasks.registry import register_task
from mmray.tasks.split_embedding import embed_split
from mmray.tasks.zero_shot import class_embeddings, zero_shot_metrics


def as_dual_encoder(model: nn.Module) -> DualEncoder:
    return task_model(model, DualEncoder, "retrieval")


def _image_rows(model: DualEncoder, split: SplitTensors, context: EvalContext) -> torch.Tensor:
    """The image tower's pooled output for every image of the split (rows shared by the ranks). -> (N, D)"""
    return context.image_rows(lambda pixels: model.encode_image_features(pixels).pooled, split.images)


def _text_rows(model: DualEncoder, split: SplitTensors, context: EvalContext) -> torch.Tensor:
    """The text tower's pooled output for every caption of the split. -> (C, D)"""

    def encode(start: int, stop: int) -> torch.Tensor:
        ids = split.caption_ids[start:stop].to(context.device)  # (b, L)
        return model.encode_text_features(ids, split.caption_mask[start:stop].to(context.device).bool()).pooled

    return context.rows(encode, split.num_captions)


class RetrievalTask(Task):
    """Contrastive / triplet / InfoNCE training of a dual encoder; a frozen tower's features are
    computed once (`with_frozen_features`) and its batches then carry them instead of its inputs."""

    batch_fields: tuple[str, ...] = ("images", "caption_ids", "caption_mask")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        self.retrieval_config = of_kind(config, RetrievalTaskConfig, "a retrieval task")
        self.loss = RepresentationLoss(self.retrieval_config.loss)

    def build_model(self) -> nn.Module:
        """The dual encoder; its temperature (and bias) train only under a loss that reads them (DDP needs
        every trainable parameter to receive a gradient)."""
        model = as_dual_encoder(super().build_model())
        freeze_unread_logit_parameters(model, self.loss)
        return model

    def bind(self, train: CocoDataset) -> tuple[TaskSection, ModelSection]:
        """Zero-shot classification's class names from the instances file's categories, unless given."""
        zero_shot = self.retrieval_config.zero_shot
        if zero_shot is None or zero_shot.class_names is not None:
            return self.config, self.model_config
        if not train.categories:
            raise ConfigError("task.zero_shot needs class_names, or data with an instances file naming categories")
        names = [category.name for category in train.categories]
        bound = self.retrieval_config.model_copy(
            update={"zero_shot": zero_shot.model_copy(update={"class_names": names})}
        )
        return bound, self.model_config

    def evaluation_split(self, split: CocoDataset) -> CocoDataset:
        zero_shot = self.retrieval_config.zero_shot
        if zero_shot is None or zero_shot.class_names is None:
            return split
        return labels_for_classes(split, zero_shot.class_names, "task.zero_shot")

    def _feature_keys(self, dual: DualEncoder, cache_images: bool) -> tuple[partial[str] | None, partial[str] | None]:
        """Of the image and the text tower, where frozen (the image tower only with `cache_images`), its
        inputs -> the key of its features (`features_key`); else None."""
        images = cache_images and is_frozen(dual.image_encoder)
        captions = is_frozen(dual.text_encoder)
        if not (images or captions):
            return None, None
        config = self.model_config
        assert isinstance(config, DualEncoderConfig | HfDualEncoderConfig)
        fingerprint = self.processor.fingerprint()
        return (
            partial(features_key, dual.image_encoder, config.image.model_dump_json(), fingerprint) if images else None,
            partial(features_key, dual.text_encoder, config.text.model_dump_json(), fingerprint) if captions else None,
        )

    def with_frozen_features(
        self,
        model: nn.Module,
        splits: dict[str, SplitTensors],
        context: EvalContext,
        cache_root: str | None,
        cache_images: bool = True,
    ) -> dict[str, SplitTensors]:
        dual = as_dual_encoder(model)
        image_key, text_key = self._feature_keys(dual, cache_images)
        if image_key is None and text_key is None:
            return splits
        done: dict[str, SplitTensors] = {}
        for name, split in splits.items():
            image_extras, caption_extras = dict(split.image_extras), dict(split.caption_extras)
            if image_key is not None:
                key = image_key([split.images])
                compute = partial(_image_rows, dual, split, context)
                image_extras[IMAGE_FEATURES] = cached_features(cache_root, key, f"{name} images", compute, context.rank)
            if text_key is not None:
                key = text_key([split.caption_ids, split.caption_mask])
                compute = partial(_text_rows, dual, split, context)
                caption_extras[TEXT_FEATURES] = cached_features(
                    cache_root, key, f"{name} captions", compute, context.rank
                )
            done[name] = replace(split, image_extras=image_extras, caption_extras=caption_extras)
        self.batch_fields = (
            *((IMAGE_FEATURES,) if image_key is not None else ("images",)),
            *((TEXT_FEATURES,) if text_key is not None else ("caption_ids", "caption_mask")),
        )
        return done

    def frozen_towers(self, model: nn.Module, cache_images: bool = True) -> FrozenTowers | None:
        dual = as_dual_encoder(model)
        image_key, text_key = self._feature_keys(dual, cache_images)
        if image_key is None and text_key is None:
            return None
        return FrozenTowers(
            key="-".join(key([]) if key is not None else "-" for key in (image_key, text_key)),
            images=(lambda pixels: dual.encode_image_features(pixels).pooled) if image_key is not None else None,
            captions=(lambda ids, mask: dual.encode_text_features(ids, mask).pooled) if text_key is not None else None,
        )

    def start_weights(self, model: nn.Module, split: SplitTensors | None, context: EvalContext) -> str | None:
        """With `model.init_projections: procrustes`, the heads from the training split's frozen features
        (the cached ones when `with_frozen_features` added them)."""
        config = self.model_config
        if not isinstance(config, DualEncoderConfig) or config.init_projections != "procrustes":
            return None
        if split is None:
            raise ConfigError("model.init_projections=procrustes needs the training split in memory, not streamed")
        dual = as_dual_encoder(model)
        images = split.image_extras.get(IMAGE_FEATURES)
        texts = split.caption_extras.get(TEXT_FEATURES)
        images = _image_rows(dual, split, context) if images is None else images  # (N, D_img)
        texts = _text_rows(dual, split, context) if texts is None else texts  # (C, D_txt)
        aligned = start_from_procrustes(dual, images, texts, split.caption_image)
        return (
            f"projection heads start from orthogonal Procrustes on PCA of the frozen features of "
            f"{split.num_images} training images and {split.num_captions} captions ({aligned} of {dual.embed_dim} dims)"
        )

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        with context.autocast():
            output = model(
                batch.get("images"),
                batch.get("caption_ids"),
                batch.get("caption_mask"),
                image_features=batch.get(IMAGE_FEATURES),
                text_features=batch.get(TEXT_FEATURES),
            )
        return StepOutput(loss=self.loss(output, step=context.step).loss)

    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        """Recall@K both ways; with `zero_shot`, zero-shot classification of the split's images too."""
        image_vectors, text_vectors = embed_split(model, split, context)
        metrics = retrieval_metrics(image_vectors, text_vectors, split.caption_image)
        zero_shot = self.retrieval_config.zero_shot
        if zero_shot is not None and zero_shot.class_names is not None:
            with eval_mode(model):
                classes = class_embeddings(as_embedding_model(model), self.processor, zero_shot, context.device)
            metrics |= zero_shot_metrics(image_vectors, classes.cpu(), split.labels)
        return metrics

    @property
    def score(self) -> Score:
        return Score("recall_mean", "max")

    def epoch_logs(self, model: nn.Module) -> dict[str, float]:
        dual = as_dual_encoder(model)
        logs = {"temperature": float(1.0 / dual.logit_scale.detach())}
        return logs | ({"logit_bias": float(dual.logit_bias.detach())} if dual.logit_bias is not None else {})


register_task("retrieval", RetrievalTask)
