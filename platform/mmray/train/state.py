"""Training state saved in every checkpoint, so that a run resumes exactly where it stopped."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAIN_STATE = "train_state.pt"
HISTORY = "history.json"


@dataclass
class Progress:
    """Where a run is: epochs completed, optimizer steps taken, the metrics of every epoch so far."""

    epochs_done: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_eval_epoch: int = 0


def save_train_state(
    directory: Path,
    progress: Progress,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    scaler: torch.amp.GradScaler,
) -> None:
    """Everything but the weights: progress, every optimizer and scheduler by name, scaler, RNG states."""
    state = {
        "progress": progress.__dict__,
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "schedulers": {name: scheduler.state_dict() for name, scheduler in schedulers.items()},
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
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    scaler: torch.amp.GradScaler,
) -> Progress:
    state = torch.load(directory / TRAIN_STATE, map_location="cpu", weights_only=False)
    if set(state["optimizers"]) != set(optimizers):
        raise ValueError(f"checkpoint has optimizers {sorted(state['optimizers'])}, the task {sorted(optimizers)}")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
        schedulers[name].load_state_dict(state["schedulers"][name])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return Progress(**state["progress"])


def read_history(directory: Path) -> list[dict[str, Any]]:
    path = directory / HISTORY
    return list(json.loads(path.read_text())) if path.is_file() else []
