"""Training state saved in every checkpoint, so that a run resumes exactly where it stopped."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmray.train.bundle import HISTORY, TRAIN_STATE


@dataclass
class Progress:
    """Where a run is: epochs completed, optimizer steps taken, the metrics of every epoch so far."""

    epochs_done: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_eval: dict[str, float] = field(default_factory=dict)


def save_train_state(
    directory: Path,
    progress: Progress,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    state = {
        "progress": progress.__dict__,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    torch.save(state, directory / TRAIN_STATE)
    (directory / HISTORY).write_text(json.dumps(progress.history, indent=2))


def load_train_state(
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> Progress:
    state = torch.load(directory / TRAIN_STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return Progress(**state["progress"])


def read_history(directory: Path) -> list[dict[str, Any]]:
    path = directory / HISTORY
    return list(json.loads(path.read_text())) if path.is_file() else []
