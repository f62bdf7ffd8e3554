"""Task configs, chosen by `task.kind`: what a training run optimises and how it is evaluated."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator

from mmray.config.base import Section
from mmray.config.registry import KindRegistry
from mmray.config.training import InfoNceLossConfig, LossConfig


class TaskSection(Section):
    """Base of every task config; `kind` selects the task in the registry."""

    kind: str


task_kinds: KindRegistry[TaskSection] = KindRegistry("task", TaskSection)


class ZeroShotSettings(Section):
    """Zero-shot classification, measured beside retrieval: each class is the mean embedding of its prompts,
    each image is scored against every class by cosine similarity."""

    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a {}."],
        min_length=1,
        description="templates, {} replaced by the class name; a class's prompts are averaged",
    )
    class_names: list[str] | None = Field(
        None,
        description="one per label column of the data (the instances file's categories in id order); "
        "None: those categories' names, filled in when training starts",
    )

    @field_validator("prompts")
    @classmethod
    def _placeholder(cls, prompts: list[str]) -> list[str]:
        missing = [p for p in prompts if "{}" not in p]
        if missing:
            raise ValueError(f"every prompt needs {{}} where the class name goes, got {missing}")
        return prompts


@task_kinds.register
class RetrievalTaskConfig(TaskSection):
    """Representation learning: both towers into one space, ranked by mean Recall@K both ways."""

    kind: Literal["retrieval"] = "retrieval"
    loss: LossConfig = Field(default_factory=lambda: InfoNceLossConfig(kind="infonce"))
    zero_shot: ZeroShotSettings | None = Field(
        None, description="also measure zero-shot classification of the images by class-name prompts"
    )


TaskConfig = Annotated[SerializeAsAny[TaskSection], BeforeValidator(task_kinds.validate)]
