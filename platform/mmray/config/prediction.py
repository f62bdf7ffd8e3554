"""The predict task config: named heads on a fused vector, each with its target, loss and weight."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mmray.config.base import Section
from mmray.config.tasks import TaskSection, task_kinds
from mmray.config.training import LossConfig

TARGET_DESCRIPTION = (
    "a per-image target (labels, object_count, covered_fraction) or a caption target named in the "
    "captions file's `targets` (e.g. present, count of the shapes questions)"
)


class _Head(Section):
    target: str = Field(description=TARGET_DESCRIPTION)
    weight: float = Field(1.0, ge=0.0, description="this head's share of the total loss")


class MulticlassHeadConfig(_Head):
    """One class per example (the target holds the class index); cross-entropy."""

    kind: Literal["multiclass"]
    classes: int = Field(ge=2)
    class_names: list[str] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _names_match(self) -> MulticlassHeadConfig:
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.classes} classes")
        return self


class MultilabelHeadConfig(_Head):
    """Any number of labels per example (a multi-hot target); BCE with logits."""

    kind: Literal["multilabel"]
    target: str = Field("labels", description=TARGET_DESCRIPTION)
    classes: int | None = Field(None, ge=1, description="None: the number of categories in the data")
    class_names: list[str] | None = Field(None, description="None: the data's category names")
    pos_weight: float | list[float] | Literal["balanced"] | None = Field(
        None,
        description="weight of positive labels in BCE: one number, one per label, or balanced (negatives ÷ "
        "positives of each label in the training split)",
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="probability above which a label is predicted")


class RegressionHeadConfig(_Head):
    """A real-valued target; MSE or smooth L1."""

    kind: Literal["regression"]
    loss: Literal["mse", "smooth_l1"] = "mse"
    beta: float = Field(1.0, gt=0.0, description="smooth L1: where the loss turns from quadratic to linear")


HeadTaskConfig = Annotated[
    MulticlassHeadConfig | MultilabelHeadConfig | RegressionHeadConfig, Field(discriminator="kind")
]


class ContrastiveTermConfig(Section):
    """A representation loss on the encoder's two embeddings, added to the heads' losses."""

    weight: float = Field(1.0, gt=0.0)
    loss: LossConfig


@task_kinds.register
class PredictTaskConfig(TaskSection):
    """Classification and regression from the fused image + text vector: one or more heads, each with
    its loss; the total loss is the weighted sum, plus an optional contrastive term."""

    kind: Literal["predict"] = "predict"
    heads: dict[str, HeadTaskConfig] = Field(min_length=1)
    contrastive: ContrastiveTermConfig | None = None
    score: str | None = Field(
        None, description="metric ranking checkpoints, e.g. present_accuracy; default: the first head's main metric"
    )

    @model_validator(mode="after")
    def _head_names(self) -> PredictTaskConfig:
        for name in self.heads:
            if not name.isidentifier():
                raise ValueError(f"head name {name!r} must be an identifier (letters, digits, _)")
        return self
