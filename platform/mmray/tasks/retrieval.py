"""The retrieval task: image and text towers trained into one space with a representation loss,
evaluated by COCO-protocol Recall@K both ways and ranked by its mean."""

from __future__ import annotations

from torch import nn

from mmray.config.model import ModelSection
from mmray.config.tasks import RetrievalTaskConfig, TaskSection
from mmray.data.processor import Processor
from mmray.data.tensors import SplitTensors
from mmray.losses import RepresentationLoss
from mmray.metrics import retrieval_metrics
from mmray.models.dual_encoder import DualEncoder
from mmray.retrieval.split_embedding import embed_split
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, task_model
from mmray.tasks.registry import register_task


def as_dual_encoder(model: nn.Module) -> DualEncoder:
    return task_model(model, DualEncoder, "retrieval")


class RetrievalTask(Task):
    """Contrastive / triplet / InfoNCE training of a dual encoder."""

    batch_fields = ("images", "caption_ids", "caption_mask")

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        if not isinstance(config, RetrievalTaskConfig):
            raise TypeError(f"expected a retrieval task config, got kind {config.kind!r}")
        self.loss = RepresentationLoss(config.loss)

    def build_model(self) -> nn.Module:
        """The dual encoder; its temperature trains only under a loss that reads it (DDP needs every
        trainable parameter to receive a gradient)."""
        model = as_dual_encoder(super().build_model())
        if not self.loss.uses_temperature:
            model.log_logit_scale.requires_grad_(False)
        return model

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        with context.autocast():
            output = model(batch["images"], batch["caption_ids"], batch["caption_mask"])
        return StepOutput(loss=self.loss(output, step=context.step).loss)

    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        image_vectors, text_vectors = embed_split(model, split, context)
        return retrieval_metrics(image_vectors, text_vectors, split.caption_image)

    @property
    def score(self) -> Score:
        return Score("recall_mean", "max")

    def epoch_logs(self, model: nn.Module) -> dict[str, float]:
        return {"temperature": float(1.0 / as_dual_encoder(model).logit_scale.detach())}


register_task("retrieval", RetrievalTask)
