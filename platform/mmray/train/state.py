"""Training state saved in every checkpoint, so that a run resumes exactly where it stopped."""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmray import storage
from mmray.errors import BundleError, reading

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
        "rng": rng_state(),
    }
    torch.save(state, directory / TRAIN_STATE)
    (directory / HISTORY).write_text(json.dumps(progress.history, indent=2))


def load_train_state(
    directory: Path,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    scaler: torch.amp.GradScaler,
) -> Progress:
    """The progress saved in `directory`, its optimizers, schedulers, scaler and RNG states restored; a damaged
    file is a `BundleError` naming it."""
    with reading(directory / TRAIN_STATE, BundleError):
        try:
            state = torch.load(directory / TRAIN_STATE, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's message advises loading it unsafely
            raise ValueError("not a pickle of tensors and plain values (damaged, or carrying code)") from None
        if set(state["optimizers"]) != set(optimizers):
            raise ValueError(f"checkpoint has optimizers {sorted(state['optimizers'])}, the task {sorted(optimizers)}")
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            schedulers[name].load_state_dict(state["schedulers"][name])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        return Progress(**state["progress"])


def rng_state() -> dict[str, Any]:
    """Every random generator a step may draw from, as plain tensors and numbers (loadable with
    `weights_only=True`): PyTorch's CPU and current CUDA device's, NumPy's, Python's."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def optimizer_state_off_device(optimizers: dict[str, torch.optim.Optimizer]) -> list[str]:
    """Optimizer state tensors that live on another device than their parameter ('model: exp_avg on cpu for
    a (128, 64) parameter on cuda:0'), except scalar step counters (PyTorch keeps them on the CPU)."""
    found = []
    for name, optimizer in optimizers.items():
        for parameter, values in optimizer.state.items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.device != parameter.device:
                    shape = tuple(parameter.shape)
                    found.append(f"{name}: {key} on {value.device} for a {shape} parameter on {parameter.device}")
    return found


def checkpoint_history(uri: str) -> list[dict[str, Any]]:
    """Every epoch's metrics up to a checkpoint's (a local path or an s3:// URI), as its run recorded them."""
    path = storage.join(uri, HISTORY)
    with reading(path, BundleError):
        return list(json.loads(storage.read_text(path)))


def trained_precision(directory: Path) -> str | None:
    """The precision a checkpoint's run trained in (its last epoch's), None where its history does not say."""
    path = directory / HISTORY
    with reading(path, BundleError):
        history = json.loads(path.read_text()) if path.is_file() else []
        return str(history[-1]["precision"]) if history and "precision" in history[-1] else None
