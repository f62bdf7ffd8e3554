"""The predict task: classification and regression heads on a fusion model, with an optional
contrastive term; evaluated per head (accuracy / F1 / mAP / MAE / RMSE / R²)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmray.config.base import of_kind
from mmray.config.fusion import FusionModelConfig
from mmray.config.model import ModelSection
from mmray.config.prediction import MulticlassHeadConfig, MultilabelHeadConfig, PredictTaskConfig
from mmray.config.tasks import TaskSection
from mmray.data.coco import CocoDataset
from mmray.data.processor import Processor
from mmray.data.records import IMAGE_TARGETS
from mmray.data.tensors import SplitTensors
from mmray.distributed import gather_rows, shard_range
from mmray.errors import ConfigError
from mmray.losses.prediction import head_loss, known_rows
from mmray.losses.representation import RepresentationLoss, freeze_unread_logit_parameters
from mmray.metrics.prediction import (
    confusion_matrix,
    multiclass_metrics,
    multilabel_metrics,
    multilabel_per_label_f1,
    regression_metrics,
)
from mmray.models.fusion_model import FusionModel
from mmray.models.registry import build_model
from mmray.tasks.base import Batch, EvalContext, Score, StepContext, StepOutput, Task, eval_mode, task_model
from mmray.tasks.binding import bind_predict_task, evaluated_split, head_outputs, sized_heads
from mmray.tasks.examples import example_targets, split_examples
from mmray.tasks.prediction_figures import confusion_matrix_png, per_label_f1_png, predicted_vs_true_png
from mmray.tasks.registry import register_task

MAIN_METRIC = {"multiclass": "accuracy", "multilabel": "mAP", "regression": "r2"}
LOWER_IS_BETTER = ("mae", "rmse", "loss")


def as_fusion_model(model: nn.Module) -> FusionModel:
    return task_model(model, FusionModel, "predict")


@dataclass
class HeadPredictions:
    """One head's outputs and targets over a split's examples with a known target."""

    outputs: torch.Tensor  # (N, O)
    targets: torch.Tensor  # (N,) or (N, K)


class PredictTask(Task):
    """Heads on a fused image + text vector; one example per image (a random caption each epoch), or
    per caption when any head's target belongs to captions (e.g. a question's answer)."""

    def __init__(self, config: TaskSection, model_config: ModelSection, processor: Processor) -> None:
        super().__init__(config, model_config, processor)
        config = of_kind(config, PredictTaskConfig, "a predict task")
        if not isinstance(model_config, FusionModelConfig):
            raise ConfigError(f"task.kind=predict trains a model of kind 'fusion', not {model_config.kind!r}")
        self.predict_config = config
        targets = sorted({head.target for head in config.heads.values()})
        self.caption_targets = [t for t in targets if t not in IMAGE_TARGETS]
        self.example_unit: Literal["image", "caption"] = "caption" if self.caption_targets else "image"
        self.batch_fields = ("images", "caption_ids", "caption_mask", *targets)
        self.contrastive = RepresentationLoss(config.contrastive.loss) if config.contrastive else None
        if self.contrastive is not None and model_config.fusion.kind in ("image_only", "text_only"):
            raise ConfigError(
                f"task.contrastive needs both towers; fusion {model_config.fusion.kind!r} uses one (drop the term)"
            )

    def bind(self, train: CocoDataset) -> tuple[TaskSection, ModelSection]:
        assert isinstance(self.model_config, FusionModelConfig)
        return bind_predict_task(self.predict_config, self.model_config, train)

    def evaluation_split(self, split: CocoDataset) -> CocoDataset:
        return evaluated_split(self.predict_config, split)

    def example_captions(self, split: SplitTensors) -> torch.Tensor | None:
        if self.example_unit == "image":
            return None
        return split_examples(split, self.caption_targets).caption_index

    def build_model(self) -> nn.Module:
        """The fusion model with one head per task head (sized from it; hidden width from model.heads)."""
        assert isinstance(self.model_config, FusionModelConfig)
        heads = sized_heads(self.predict_config, self.model_config)
        model = as_fusion_model(build_model(self.model_config.model_copy(update={"heads": heads}), self.processor))
        freeze_unread_logit_parameters(model.encoder, self.contrastive)
        return model

    def training_step(self, model: nn.Module, batch: Batch, optimizer_name: str, context: StepContext) -> StepOutput:
        with context.autocast():
            output = model(batch["images"], batch["caption_ids"], batch["caption_mask"])
        logs: dict[str, float] = {}
        total = torch.zeros((), device=batch["images"].device)
        for name, head in self.predict_config.heads.items():
            loss = head_loss(head, output.predictions[name], batch[head.target])
            logs[f"loss_{name}"] = float(loss.detach())
            total = total + head.weight * loss
        if self.contrastive is not None:
            assert self.predict_config.contrastive is not None and output.embeddings is not None
            loss = self.contrastive(output.embeddings, step=context.step).loss
            logs["loss_contrastive"] = float(loss.detach())
            total = total + self.predict_config.contrastive.weight * loss
        return StepOutput(loss=total, logs=logs)

    @torch.no_grad()
    def predict_split(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, HeadPredictions]:
        """Every head's outputs on the split's examples, sharded over ranks and gathered on each."""
        fusion = as_fusion_model(model)
        with eval_mode(fusion):
            examples = split_examples(split, self.caption_targets)
            rows = shard_range(examples.count, context.rank, context.world)
            chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.predict_config.heads}
            for start in range(rows.start, rows.stop, context.batch_size):
                chosen = torch.arange(start, min(start + context.batch_size, rows.stop))
                images = context.normalized_images(split.images[examples.image_index[chosen]])  # (b, 3, S, S)
                captions = examples.caption_index[chosen]
                ids = split.caption_ids[captions].to(context.device)  # (b, L)
                mask = split.caption_mask[captions].to(context.device).bool()  # (b, L)
                for name, values in fusion(images, ids, mask).predictions.items():
                    chunks[name].append(values.float())
        predictions = {}
        for name, head in self.predict_config.heads.items():
            width = head_outputs(head)
            local = torch.cat(chunks[name]) if chunks[name] else torch.zeros(0, width, device=context.device)
            outputs = gather_rows(local, examples.count, context.world).cpu()  # (E, O)
            targets = example_targets(split, examples, head.target)  # (E,) or (E, K)
            known = known_rows(targets)
            predictions[name] = HeadPredictions(outputs[known], targets[known])
        return predictions

    def evaluate(self, model: nn.Module, split: SplitTensors, context: EvalContext) -> dict[str, float]:
        return self.metrics(self.predict_split(model, split, context))

    def metrics(self, predictions: dict[str, HeadPredictions]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, head in self.predict_config.heads.items():
            p = predictions[name]
            if p.targets.shape[0] == 0:
                values = {MAIN_METRIC[head.kind]: math.nan}
            elif isinstance(head, MulticlassHeadConfig):
                values = multiclass_metrics(p.outputs, p.targets, head.classes)
            elif isinstance(head, MultilabelHeadConfig):
                values = multilabel_metrics(p.outputs, p.targets, head.threshold)
            else:
                values = regression_metrics(p.outputs.squeeze(-1), p.targets)
            metrics.update({f"{name}_{key}": value for key, value in values.items()})
            metrics[f"{name}_examples"] = float(p.targets.shape[0])
        return metrics

    def figures(self, predictions: dict[str, HeadPredictions]) -> dict[str, bytes]:
        """A confusion matrix per multi-class head, per-label F1 bars per multi-label head and a
        predicted-vs-true scatter per regression head, as PNG bytes by file name."""
        pngs = {}
        for name, head in self.predict_config.heads.items():
            p = predictions[name]
            if p.targets.shape[0] == 0:
                continue
            if isinstance(head, MulticlassHeadConfig):
                names = head.class_names or [str(i) for i in range(head.classes)]
                matrix = confusion_matrix(p.outputs, p.targets, head.classes)
                pngs[f"{name}_confusion.png"] = confusion_matrix_png(matrix, names, name)
            elif isinstance(head, MultilabelHeadConfig):
                per_label = multilabel_per_label_f1(p.outputs, p.targets, head.threshold)
                names = head.class_names or [str(i) for i in range(p.targets.shape[1])]
                support = p.targets.sum(dim=0)
                pngs[f"{name}_f1_per_label.png"] = per_label_f1_png(per_label, support, names, name)
            else:
                pngs[f"{name}_scatter.png"] = predicted_vs_true_png(p.outputs.squeeze(-1), p.targets, name)
        return pngs

    def evaluation_report(
        self, model: nn.Module, split: SplitTensors, context: EvalContext
    ) -> tuple[dict[str, float], dict[str, bytes]]:
        predictions = self.predict_split(model, split, context)
        return self.metrics(predictions), self.figures(predictions)

    @property
    def score(self) -> Score:
        metric = self.predict_config.score
        if metric is None:
            name, head = next(iter(self.predict_config.heads.items()))
            metric = f"{name}_{MAIN_METRIC[head.kind]}"
        return Score(metric, "min" if metric.endswith(LOWER_IS_BETTER) else "max")

    def epoch_logs(self, model: nn.Module) -> dict[str, float]:
        fusion = as_fusion_model(model).fusion
        alpha = getattr(fusion, "alpha", None)
        return {"alpha": float(alpha.detach())} if isinstance(alpha, torch.Tensor) else {}


register_task("predict", PredictTask)
