"""Tasks: what a training run optimises, which batch fields it reads, how it is evaluated and ranked."""

from mmray.tasks.base import EvalContext, Score, StepContext, StepOutput, Task
from mmray.tasks.registry import register_task, task_class

__all__ = ["EvalContext", "Score", "StepContext", "StepOutput", "Task", "register_task", "task_class"]
