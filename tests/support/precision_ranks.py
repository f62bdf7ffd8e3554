"""One rank of the two-rank precision timing test: each rank times a step whose speed differs by rank."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from mmray.devices import PrecisionChoice
from mmray.train.precision_probe import fastest_precision
from tests.support.gloo import gloo_group


def time_on_rank(rank: int, port: int, out: str) -> None:
    """Rank 0 finds bf16 slow (30 ms), rank 1 fp32 (10 ms), by sleeping; both must choose alike."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    slow = "bf16" if rank == 0 else "fp32"

    def step(choice: PrecisionChoice) -> None:
        time.sleep({0: 0.03, 1: 0.01}[rank] if choice.precision == slow else 0.001)
        with choice.autocast():
            model(torch.ones(3, 4)).sum().backward()

    with gloo_group(rank, 2, port):
        choice, rates = fastest_precision(step, ("bf16", "fp32"), model, torch.device("cpu"))
    Path(out, f"rank{rank}.json").write_text(json.dumps({"choice": choice.precision, "rates": rates}))
