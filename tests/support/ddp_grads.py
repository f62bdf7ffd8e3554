"""Two-process gloo run used by the gathered-gradient test (spawned, so it lives in a module)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mmray.config.training import LossConfig
from mmray.losses.representation import RepresentationLoss
from mmray.models.dual_encoder import DualEncoder
from mmray.models.outputs import EncoderOutput
from tests.support.gloo import gloo_group

GLOBAL_BATCH = 8


class FlatImageTower(nn.Module):
    """(B, 3, 4, 4) -> linear features; no batch statistics, so ranks and one process agree."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(48, 16)
        self.out_dim = 16

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        pooled = torch.tanh(self.linear(images.flatten(1)))  # (B, 16)
        return EncoderOutput(pooled, pooled.unsqueeze(1), torch.ones(images.shape[0], 1, dtype=torch.bool))


class BagOfWordsTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.out_dim = 16

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        tokens = self.embed(ids)  # (B, L, 16)
        pooled = (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # (B, 16)
        return EncoderOutput(pooled, tokens, mask)


def make_model(config: LossConfig) -> DualEncoder:
    """The training loop's set-up: the temperature only trains when the loss reads it."""
    torch.manual_seed(0)
    model = DualEncoder(FlatImageTower(), BagOfWordsTower(), nn.Linear(16, 8), nn.Linear(16, 8), 0.1)
    model.log_logit_scale.requires_grad_(RepresentationLoss(config).uses_temperature)
    return model


def make_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 4, 4, generator=generator)
    ids = torch.randint(1, 20, (GLOBAL_BATCH, 5), generator=generator)
    mask = torch.ones(GLOBAL_BATCH, 5, dtype=torch.bool)
    return images, ids, mask


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {name: p.grad.detach().clone() for name, p in inner.named_parameters() if p.grad is not None}


def single_process_gradients(config: LossConfig) -> dict[str, torch.Tensor]:
    """The parameters' gradients of the global batch's loss, and the loss itself (as `"loss"`)."""
    model = make_model(config)
    loss = RepresentationLoss(config)(model(*make_batch()), step=3).loss
    loss.backward()
    return {**gradients(model), "loss": loss.detach()}


def ddp_worker(rank: int, world: int, port: int, configs: list[LossConfig], out_dir: str) -> None:
    """Each config's gradients on this rank's rows, saved as `{config index}-rank{rank}.pt`."""
    with gloo_group(rank, world, port):
        images, ids, mask = make_batch()
        rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        for index, config in enumerate(configs):
            model = nn.parallel.DistributedDataParallel(make_model(config))
            loss = RepresentationLoss(config)(model(images[rows], ids[rows], mask[rows]), step=3).loss
            loss.backward()
            torch.save({**gradients(model), "loss": loss.detach()}, Path(out_dir) / f"{index}-rank{rank}.pt")
        dist.barrier()
    # Leave without interpreter teardown: gloo's worker threads can abort it
    # ("terminate called without an active exception") after the results are saved.
    os._exit(0)
