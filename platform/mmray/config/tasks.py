"""Task configs, chosen by `task.kind`: what a training run optimises and how it is evaluated."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny

from mmray.config.base import Section
from mmray.config.registry import KindRegistry
from mmray.config.training import InfoNceLossConfig, LossConfig


class TaskSection(Section):
    """Base of every task config; `kind` selects the task in the registry."""

    kind: str


task_kinds: KindRegistry[TaskSection] = KindRegistry("task", TaskSection)


@task_kinds.register
class RetrievalTaskConfig(TaskSection):
    """Representation learning: both towers into one space, ranked by mean Recall@K both ways."""

    kind: Literal["retrieval"] = "retrieval"
    loss: LossConfig = Field(default_factory=lambda: InfoNceLossConfig(kind="infonce"))


TaskConfig = Annotated[SerializeAsAny[TaskSection], BeforeValidator(task_kinds.validate)]
