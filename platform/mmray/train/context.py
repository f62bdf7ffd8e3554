"""What the training loop needs of where it runs. Ray Train provides one (`ray_context`), a plain process another
(`local_run`), so the loop itself knows no Ray."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn


class TrainContext(ABC):
    """One rank's view of its run."""

    rank: int
    world: int
    device: torch.device
    node: str
    """A short id of the machine this rank runs on (for the placement line)."""
    shows_progress: bool = False
    """Whether a progress display takes `post_progress` (else the loop logs a line every few steps)."""

    @abstractmethod
    def restored_checkpoint(self) -> AbstractContextManager[Path | None]:
        """The directory of the run's own checkpoint to resume from (None for a fresh start)."""

    @abstractmethod
    def place_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """The model on this rank's device, wrapped for data parallelism where the group has several ranks."""

    @abstractmethod
    def report(self, metrics: dict[str, Any], checkpoint: Path | None, checkpoint_name: str | None) -> None:
        """An epoch's metrics, with rank 0's checkpoint directory (copied away before this returns)."""

    def resolve(self, value: Any) -> Any:
        """A value the driver shared (Ray's object references become their objects)."""
        return value

    def dataset_shard(self, name: str) -> Any:
        """This rank's shard of a streamed dataset."""
        raise NotImplementedError(f"{type(self).__name__} streams no datasets; use train.loader=memory")

    def post_progress(self, state: dict[str, float]) -> None:  # noqa: B027  (no display: nothing to do)
        """Hand where the run is (epoch, step, loss, samples/s) to the progress display."""
