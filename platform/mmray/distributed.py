"""torch.distributed helpers shared by losses and evaluation; each is a no-op without a process group."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

# torch 2.14 marks it deprecated in favour of the private `torch.distributed._functional_collectives`;
# its backward works on gloo (an all-to-all) as on NCCL (a reduce-scatter).
warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated", FutureWarning)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (equal counts per rank), gradients flowing back to their owners (the
    backward of `all_gather_with_grad` sums every rank's gradient of the rows). (B, E) -> (W·B, E)"""
    if not is_distributed():
        return local
    return torch.cat(all_gather_with_grad(local), dim=0)  # type: ignore[no-untyped-call]  # (W·B, E)


def rank_offset(rows: int) -> int:
    """Where this rank's `rows` rows start in a gathered batch (0 without a process group)."""
    return dist.get_rank() * rows if is_distributed() else 0


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks, without gradient (itself without a process group)."""
    if not is_distributed():
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


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
