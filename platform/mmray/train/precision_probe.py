"""`precision: auto` on a GPU: time the run's own training step in each precision the GPU computes natively
and keep the fastest, so a model too small to fill the GPU (launch-bound, where autocast's casts only add
kernels) trains in fp32, and a real one in bf16."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from mmray.devices import Precision, PrecisionChoice, auto_candidates
from mmray.distributed import is_distributed
from mmray.train.state import restore_rng_state, rng_state

logger = logging.getLogger("mmray.train")

TIMED_STEPS = 3
"""Steps timed per precision, after one untimed step that lets the GPU pick its kernels."""
CLOSE_ENOUGH = 0.95
"""A precision this close to the fastest is kept over a faster one that comes later in the preference order."""
ROOM_FOR_FP32 = 0.45
"""fp32 is timed only where the first precision's peak memory is under this share of the GPU's (fp32
activations take up to twice as much): trying it must not run out of memory where the run would not."""


def auto_precision(choice: PrecisionChoice, trained_in: str | None) -> tuple[PrecisionChoice, tuple[Precision, ...]]:
    """For `auto`: the precision a resumed run trained in, kept where this device computes it natively (the run
    goes on as it began), else `choice`; and the precisions to time at the first step, where there are several."""
    if choice.requested != "auto":
        return choice, ()
    candidates = auto_candidates(torch.device(choice.device))
    kept = next((p for p in candidates if p == trained_in), None)
    if kept is not None:
        return PrecisionChoice(kept, "auto", choice.device), ()
    return choice, candidates if len(candidates) > 1 else ()


def compute_description(choice: PrecisionChoice, timed: Sequence[Precision]) -> str:
    """A rank's device and precision in the placement line ('cuda NVIDIA H200, auto: bf16 / fp32 / fp16 timed
    at the first step'); ranks time precisions together only where every rank's line is the same."""
    device = torch.device(choice.device)
    where = f"cuda {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
    if timed:
        return f"{where}, auto: {' / '.join(timed)} timed at the first step"
    return f"{where}, {choice.describe()}"


def fastest_precision(
    step: Callable[[PrecisionChoice], None], candidates: Sequence[Precision], model: nn.Module, device: torch.device
) -> tuple[PrecisionChoice, dict[Precision, float]]:
    """The `preferred_precision` of `measure_precisions`, and the steps per second measured."""
    rates = measure_precisions(step, candidates, model, device)
    return PrecisionChoice(preferred_precision(rates, candidates), "auto", str(device)), rates


def preferred_precision(rates: dict[Precision, float], order: Sequence[Precision]) -> Precision:
    """The first precision in `order` (most preferred first) whose measured rate is within `CLOSE_ENOUGH`
    of the fastest; precisions not measured (rate 0) are never chosen."""
    fastest = max(rates.values())
    if fastest <= 0:
        return order[0]
    return next(p for p in order if rates.get(p, 0.0) >= CLOSE_ENOUGH * fastest)


def measure_precisions(
    step: Callable[[PrecisionChoice], None],
    candidates: Sequence[Precision],
    model: nn.Module,
    device: torch.device,
) -> dict[Precision, float]:
    """Steps per second of `step` (a forward and backward pass of the run's first batch, no optimizer step) under each
    of `candidates`, on the slowest rank, so that every rank chooses alike. The model's gradients are cleared after
    every step, and its buffers (batch-norm statistics) and every random generator are left as they were. fp32 is not
    tried where it would not fit in memory, and a precision that runs out of memory in one process gets 0."""
    buffers = [buffer.detach().clone() for buffer in model.buffers()]
    generators = rng_state()
    rates: dict[Precision, float] = dict.fromkeys(candidates, 0.0)  # 0: not measured
    try:
        for number, precision in enumerate(candidates):
            if number > 0 and precision == "fp32" and not _room_for_fp32(device):
                continue
            try:
                choice = PrecisionChoice(precision, "auto", str(device))
                rates[precision] = _steps_per_second(step, choice, model, device)
            except torch.cuda.OutOfMemoryError:
                if is_distributed():  # the other ranks wait inside this step's collectives: no way back
                    raise
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                logger.warning("precision auto: %s ran out of GPU memory on the first batch; not chosen", precision)
    finally:
        with torch.no_grad():
            for saved, buffer in zip(buffers, model.buffers(), strict=True):
                buffer.copy_(saved)
        restore_rng_state(generators)
    return _slowest_over_ranks(rates, device)


def _steps_per_second(
    step: Callable[[PrecisionChoice], None], choice: PrecisionChoice, model: nn.Module, device: torch.device
) -> float:
    def cleared_step() -> None:
        step(choice)
        model.zero_grad(set_to_none=True)

    cleared_step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        cleared_step()
    _synchronize(device)
    return TIMED_STEPS / max(time.perf_counter() - started, 1e-9)


def _room_for_fp32(device: torch.device) -> bool:
    """Whether every rank's peak memory so far leaves room for fp32's larger activations."""
    if device.type != "cuda":
        return True
    share = torch.cuda.max_memory_allocated(device) / torch.cuda.get_device_properties(device).total_memory
    fullest = torch.tensor([share], device=device)
    if is_distributed():
        dist.all_reduce(fullest, op=dist.ReduceOp.MAX)
    return float(fullest) < ROOM_FOR_FP32


def _slowest_over_ranks(rates: dict[Precision, float], device: torch.device) -> dict[Precision, float]:
    """Each precision's rate on the slowest rank (a DDP step waits for it), the same on every rank."""
    if not is_distributed():
        return rates
    values = torch.tensor(list(rates.values()), dtype=torch.float64, device=device)  # (P,)
    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return dict(zip(rates, values.tolist(), strict=True))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
