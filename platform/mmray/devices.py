"""Which device a process computes on, and the precision that device computes fastest in."""

from __future__ import annotations

import functools
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mmray.config.training import PrecisionSetting
from mmray.errors import ConfigError

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_CHECKS = {"AVX-512 BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}


def pick_device(setting: str = "auto") -> torch.device:
    """`auto`: this process's GPU when it sees one, else the CPU; `cuda` (or `cuda:N`) refused where no GPU
    is visible. A GPU always comes with its index (`cuda` → this process's current GPU, `cuda:N`)."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {setting!r} was asked for, but this process sees no GPU; use 'auto' or 'cpu'")
    try:
        device = torch.device(setting)
    except RuntimeError as error:
        raise ConfigError(f"device {setting!r} is not a device; expected auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX-512 BF16); elsewhere PyTorch emulates
    it, many times slower than fp32."""
    return any(bool(getattr(torch.cpu, check)()) for check in _CPU_BF16_CHECKS.values())


def cpu_description() -> str:
    """'AVX2', 'AVX512', 'AVX512 + AMX' …: the instruction set PyTorch dispatches to on this CPU."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    extras = [name for name, check in _CPU_BF16_CHECKS.items() if getattr(torch.cpu, check)()]
    return " + ".join([capability, *extras])


def auto_candidates(device: torch.device) -> tuple[Precision, ...]:
    """What `auto` chooses among on `device`, most preferred first: on a GPU every precision it computes natively
    (bf16 from compute capability 8.0, else fp16), timed on the run's own step (bf16 loses to fp32 on a model too
    small to fill the GPU); on a CPU, too slow to time them all, bf16 where native (1.6-1.7× fp32), else fp32."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ("bf16", "fp32", "fp16") if major >= 8 else ("fp16", "fp32")
    return ("bf16",) if device.type == "cpu" and cpu_has_native_bf16() else ("fp32",)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a process trains in, and why (shown in the placement line)."""

    precision: Precision
    requested: PrecisionSetting
    device: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPES.get(self.precision)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.precision == "fp16"

    def autocast(self) -> AbstractContextManager[Any]:
        """The autocast region of a forward pass in this precision (nothing for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    def describe(self) -> str:
        return f"{self.precision} auto-chosen" if self.requested == "auto" else self.precision


def resolve_precision(requested: PrecisionSetting, device: torch.device) -> PrecisionChoice:
    """`auto` → the first of the device's `auto_candidates`. An explicit bf16 on a CPU without native bf16 still
    runs, with one warning naming its measured cost; fp16 is refused off the GPU (CPUs have no fast fp16)."""
    if requested == "auto":
        return PrecisionChoice(auto_candidates(device)[0], requested, str(device))
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA GPU; this process runs on {device}: use auto, bf16 or fp32")
    if requested == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "precision bf16 on a CPU without native bf16 (%s): PyTorch emulates it, measured %.0f× slower than "
            "fp32 on a matrix product here; precision auto picks fp32 on this CPU",
            cpu_description(),
            measured_bf16_slowdown(),
        )
    return PrecisionChoice(requested, requested, str(device))


@functools.cache
def measured_bf16_slowdown(size: int = 384, repeats: int = 3) -> float:
    """How many times longer a (size × size) matrix product takes in bf16 than in fp32 on this CPU."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size).to(dtype)  # (S, S)
        a @ a  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            a @ a
        seconds[dtype] = time.perf_counter() - started
    return seconds[torch.bfloat16] / max(seconds[torch.float32], 1e-9)
