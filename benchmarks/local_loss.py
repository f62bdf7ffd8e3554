"""The retrieval loss on this rank's rows against the gathered batch (local, what training runs) against
every rank computing the whole global batch's logits (global, what mmray ran before), at 2 gloo ranks.

Rows, measured in one run with the two variants in alternating rounds (a shared machine's speed drifts):
  loss only     forward + backward of InfoNCE on random (B, E) embeddings per rank, B in --rows
  train step    plain DDP on the shapes-clip job's model, data and batch (train_throughput.plain_pytorch)
Both variants give the same gradients (tests/test_gathered_gradients.py); ratios are local / global.
Usage: python benchmarks/local_loss.py [--rounds 3] [--steps 10] [--images 4000] [--rows 256 1024]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import train_throughput

from mmray.distributed import gather_with_grad
from mmray.losses.representation import LossOutput, RepresentationLoss, info_nce_loss
from mmray.models.outputs import DualEncoderOutput

WORLD = 2


class GlobalInfoNce(RepresentationLoss):
    """The former computation: every rank builds the (N, N) logits of the gathered batch."""

    def forward(self, output: DualEncoderOutput, step: int = 0) -> LossOutput:
        image, text = gather_with_grad(output.image_embeddings), gather_with_grad(output.text_embeddings)
        return LossOutput(info_nce_loss(image, text, output.logit_scale), image.shape[0])


def _loss_only(mode: str, rows: int, iterations: int) -> float:
    """Samples/s (global) of forward + backward of the loss alone on this rank."""
    loss_class = GlobalInfoNce if mode == "global" else RepresentationLoss
    loss_fn = loss_class(train_throughput.load_job(train_throughput.JOB).task.loss)  # type: ignore[union-attr]
    generator = torch.Generator().manual_seed(dist.get_rank())
    image = torch.nn.functional.normalize(torch.randn(rows, 128, generator=generator), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(rows, 128, generator=generator), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    output = DualEncoderOutput(image, text, scale)
    for _ in range(3):
        loss_fn(output).loss.backward()
    dist.barrier()
    started = time.perf_counter()
    for _ in range(iterations):
        loss_fn(output).loss.backward()
    return iterations * rows * WORLD / (time.perf_counter() - started)


def _rank(rank: int, port: int, mode: str, what: dict[str, Any], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        if mode == "global":
            train_throughput.RepresentationLoss = GlobalInfoNce  # type: ignore[misc]
        if "rows" in what:
            rate = _loss_only(mode, what["rows"], what["iterations"])
        else:
            rate = train_throughput.plain_pytorch(what["overrides"], what["steps"], 1, rank, WORLD)
        Path(out, f"rank{rank}.txt").write_text(str(rate))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def measure(mode: str, what: dict[str, Any]) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        torch.multiprocessing.spawn(_rank, args=(port, mode, what, out), nprocs=WORLD, join=True)
        return float(Path(out, "rank0.txt").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--images", type=int, default=4000, help="shapes images (train + val)")
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 1024], help="rows per rank, loss only")
    parser.add_argument("--iterations", type=int, default=20, help="timed loss-only iterations per round")
    args = parser.parse_args()
    data = [f"data.images={args.images}", f"data.val_images={max(100, args.images // 11)}"]
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"loss only, {rows} rows per rank", {"rows": rows, "iterations": args.iterations}) for rows in args.rows
    ]
    cases.append(("train step, shapes-clip", {"overrides": data, "steps": args.steps}))
    print(f"{WORLD} gloo ranks, 1 thread each; samples/s (global batch), {args.rounds} alternating rounds")
    for name, what in cases:
        rates: dict[str, list[float]] = {"global": [], "local": []}
        for _ in range(args.rounds):
            for mode in ("global", "local"):
                rates[mode].append(measure(mode, what))
        ratios = [local / global_ for local, global_ in zip(rates["local"], rates["global"], strict=True)]
        global_rate, local_rate = statistics.median(rates["global"]), statistics.median(rates["local"])
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{name:34s} global {global_rate:9.0f}  local {local_rate:9.0f}  "
              f"local/global {statistics.median(ratios):.2f} (rounds: {rounds})")  # fmt: skip


if __name__ == "__main__":
    main()
