"""torch.distributed helpers shared by losses and evaluation; each is a no-op without a process group."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherRows(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient and returns this rank's rows."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:  # local: (B, E)
        ctx.rank, ctx.rows = dist.get_rank(), local.shape[0]
        pieces = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, local.contiguous())
        return torch.cat(pieces, dim=0)  # (W·B, E)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # grad: (W·B, E)
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]  # (B, E)


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (equal counts per rank), gradients flowing back to their owners.

    Each rank then computes the loss of the global batch; DDP's gradient averaging over ranks turns
    the summed per-rank gradients into exactly the single-process gradient of that loss.
    (B, E) -> (W·B, E)
    """
    if not is_distributed():
        return local
    gathered: torch.Tensor = _GatherRows.apply(local)
    return gathered


def shard_range(count: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous share of `count` rows (equal shares, the last one shorter)."""
    per_rank = -(-count // world)
    return range(min(count, rank * per_rank), min(count, (rank + 1) * per_rank))


def gather_rows(local: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Concatenate every rank's `shard_range` rows, on the device they were computed on
    (NCCL gathers only device tensors). local: (n_r, ...) -> (total, ...)"""
    if world == 1:
        return local
    per_rank = -(-total // world)
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=local.device)  # (per_rank, ...)
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return torch.cat(pieces)[:total]  # (total, ...)


def gather_objects(local: Any) -> list[Any]:
    """Every rank's `local`, in rank order (a list of one without a process group)."""
    if not is_distributed():
        return [local]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def describe_placement(workers: list[tuple[str, int, str]]) -> str:
    """'2 workers (cpu, fp32) on 1 node: a52bbe6b ranks 0, 1 (pids 811, 812)' from each rank's (node id, pid,
    device and precision) in rank order; where ranks compute differently, each group names its own."""
    by_group: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for rank, (node, pid, compute) in enumerate(workers):
        by_group.setdefault((node, compute), []).append((rank, pid))
    uniform = len({compute for _, _, compute in workers}) == 1
    groups = []
    for (node, compute), members in by_group.items():
        ranks, pids = [rank for rank, _ in members], [str(pid) for _, pid in members]
        plural = "s" * (len(members) > 1)
        own = "" if uniform else f"{compute}; "
        groups.append(f"{node} rank{plural} {_span(ranks)} ({own}pid{plural} {', '.join(pids)})")
    count = "1 worker" if len(workers) == 1 else f"{len(workers)} workers"
    nodes = len({node for node, _, _ in workers})
    hosts = "1 node" if nodes == 1 else f"{nodes} nodes"
    shared = f" ({workers[0][2]})" if uniform else ""
    return f"{count}{shared} on {hosts}: {'; '.join(groups)}"


def _span(members: list[int]) -> str:
    contiguous = members == list(range(members[0], members[0] + len(members)))
    if contiguous and len(members) > 2:
        return f"{members[0]}-{members[-1]}"
    return ", ".join(str(m) for m in members)
