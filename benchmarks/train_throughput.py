"""Training throughput: the Ray Train loop against a plain PyTorch loop on the same model and data.

Rows, all on the shapes-clip job's model, data, batch size and precision (auto), measured in one run:
  plain PyTorch     one process, all threads, no Ray
  plain DDP         N processes × 1 thread, torch.distributed (gloo), no Ray
  Ray Train 1×N     one Ray Train worker with the same threads (the platform's overhead)
  Ray Train N×1     N DDP workers with one thread each (the shapes-clip job's layout)
Throughput is steady-state samples/s: the plain loop after 3 warm-up steps, Ray Train over its second
epoch (the first pays for kernel warm-up). End-to-end wall time of `mmray train` (2 epochs, Ray start-up,
data loading and evaluation included) is printed too. The DDP pair runs in alternating rounds (a shared
machine's speed drifts over minutes) and its ratio is the median of the rounds' ratios; while each Ray
run trains, the cores used by its workers and by Ray's other processes are read from /proc.
Usage: python benchmarks/train_throughput.py [--steps 30] [--images 11000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

from mmray.config import TrainJob, load_job
from mmray.data.sources import load_split
from mmray.data.tensors import split_to_tensors
from mmray.devices import resolve_precision
from mmray.losses.representation import RepresentationLoss
from mmray.models.registry import build_model, build_processor
from mmray.train.feeds import memory_batches

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "shapes-clip.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def plain_pytorch(overrides: list[str], steps: int, threads: int, rank: int = 0, world: int = 1) -> float:
    """Samples/s of a loop without Ray: same model, feed, loss, optimizer and precision."""
    spec = load_job(JOB, overrides)
    assert isinstance(spec, TrainJob)
    torch.set_num_threads(threads)
    train = load_split(spec.data, "train", progress=False)
    processor = build_processor(spec.model, [c for r in train.records for c in r.captions])
    tensors = split_to_tensors(train, processor, progress=False)
    torch.manual_seed(spec.train.seed)
    model: torch.nn.Module = build_model(spec.model, processor)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    loss_fn = RepresentationLoss(spec.task.loss)  # type: ignore[attr-defined]
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.train.lr, weight_decay=spec.train.weight_decay)
    fields = ("images", "caption_ids", "caption_mask")
    batches = memory_batches(tensors, fields, rank, world, spec.train.batch_size, spec.train.seed, 0)
    precision = resolve_precision(spec.train.precision, torch.device("cpu"))  # what the job's workers pick
    warmup, timed = 3, 0
    for step, batch in enumerate(batches):
        if step == warmup:
            started = time.perf_counter()
        if step == warmup + steps:
            break
        timed += step >= warmup
        with precision.autocast():
            output = model(processor.normalize(batch["images"]), batch["caption_ids"], batch["caption_mask"])
        loss = loss_fn(output).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    if timed < steps:
        raise ValueError(f"the split has batches for {timed} timed steps, fewer than --steps {steps}")
    return timed * spec.train.batch_size / (time.perf_counter() - started)


def _ddp_rank(rank: int, world: int, port: int, overrides: list[str], steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rate = plain_pytorch(overrides, steps, threads=1, rank=rank, world=world)
        Path(out, f"rank{rank}.txt").write_text(str(rate))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def plain_ddp(overrides: list[str], steps: int, world: int) -> float:
    """Samples/s of `world` gloo DDP processes with one thread each (rank 0's measurement)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        torch.multiprocessing.spawn(_ddp_rank, args=(world, port, overrides, steps, out), nprocs=world, join=True)
        return float(Path(out, "rank0.txt").read_text())


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """CPU ticks (user + system) and command line of every process."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ticks[int(entry.name)] = (int(fields[11]) + int(fields[12]), command)
    return ticks


def cpu_shares(after_s: float, window_s: float, stop: threading.Event, out: dict[str, float]) -> None:
    """Cores used by Ray Train workers and by Ray's other processes over a window of a running job."""
    if stop.wait(after_s):
        return
    before = _cpu_ticks()
    started = time.perf_counter()
    if stop.wait(window_s):
        return
    after, elapsed, hertz = _cpu_ticks(), time.perf_counter() - started, os.sysconf("SC_CLK_TCK")
    for pid, (ticks, command) in after.items():
        used = (ticks - before.get(pid, (0, command))[0]) / hertz / elapsed
        if "RayTrainWorker" in command:
            out["workers"] = out.get("workers", 0.0) + used
        elif "ray" in command.lower() and "train_throughput" not in command:
            out["ray_background"] = out.get("ray_background", 0.0) + used


def ray_train(overrides: list[str], name: str) -> tuple[float, float, dict[str, float]]:
    """(samples/s of the last training epoch, end-to-end seconds of `mmray train`, cores used by the
    workers and by Ray's own processes while the second epoch ran)."""
    command = [str(Path(sys.executable).parent / "mmray"), "train", str(JOB), f"name={name}", *overrides]
    shares: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=cpu_shares, args=(45.0, 15.0, stop, shares), daemon=True)
    started = time.perf_counter()
    sampler.start()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    stop.set()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    final = json.loads(result.stdout.strip().splitlines()[-1])
    return float(final["samples_per_s"]), wall, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the plain loops (≤ one epoch)")
    parser.add_argument("--images", type=int, default=11000, help="shapes images (train + val)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain DDP / Ray Train DDP rounds")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    threads = os.cpu_count() or 1
    runs_root = ROOT / "runs" / "bench"
    data = [f"data.images={args.images}", f"data.val_images={max(100, args.images // 11)}"]
    common = [*data, "train.epochs=2", "train.eval_every=2", f"storage_root={runs_root}", "train.log_every_steps=1000"]
    stamp = time.strftime("%Y%m%d-%H%M%S")

    plain = plain_pytorch(data, args.steps, threads)
    one_worker, one_wall, _ = ray_train(
        [*common, "train.num_workers=1", f"train.cpus_per_worker={threads}"], f"bench-1x{threads}-{stamp}"
    )
    pairs = []
    for round_ in range(args.rounds):
        ddp_plain = plain_ddp(data, args.steps, threads)
        ddp, ddp_wall, shares = ray_train(
            [*common, f"train.num_workers={threads}", "train.cpus_per_worker=1"], f"bench-{threads}x1-{stamp}-{round_}"
        )
        pairs.append((ddp_plain, ddp, ddp_wall, shares))
        print(
            f"round {round_ + 1}: plain DDP {ddp_plain:.0f}, Ray Train DDP {ddp:.0f} samples/s "
            f"({ddp / ddp_plain:.2f}×); cores: workers {shares.get('workers', 0):.2f}, "
            f"Ray's other processes {shares.get('ray_background', 0):.2f}",
            flush=True,
        )
    ddp_plain = statistics.median(p[0] for p in pairs)
    ddp = statistics.median(p[1] for p in pairs)
    ddp_wall = statistics.median(p[2] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    background = statistics.median(p[3].get("ray_background", 0.0) for p in pairs)
    rows = [
        ("plain PyTorch", f"1 process × {threads} threads", plain, None),
        ("plain DDP", f"{threads} processes × 1 thread", ddp_plain, None),
        ("Ray Train", f"1 worker × {threads} threads", one_worker, one_wall),
        ("Ray Train DDP", f"{threads} workers × 1 thread", ddp, ddp_wall),
    ]
    print(f"\n{'loop':<16}{'layout':<26}{'samples/s':>11}{'vs plain':>10}{'wall s':>9}")
    for name, layout, rate, wall in rows:
        shown_wall = f"{wall:9.1f}" if wall is not None else f"{'-':>9}"
        print(f"{name:<16}{layout:<26}{rate:>11.0f}{rate / plain:>9.2f}×{shown_wall}")
    print(
        f"\nRay Train DDP ÷ plain DDP, median of {args.rounds} alternating rounds: {ratio:.2f}×; "
        f"Ray's own processes used {background:.2f} of {threads} cores meanwhile"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "train_throughput",
        "cpus": threads,
        "batch_size": int(yaml.safe_load(JOB.read_text())["train"]["batch_size"]),
        "rows": [
            {"loop": n, "layout": lay, "samples_per_s": r, "ratio_vs_plain": r / plain, "wall_s": w}
            for n, lay, r, w in rows
        ],
        "ddp_rounds": [
            {"plain_ddp": a, "ray_train_ddp": b, "ratio": b / a, "wall_s": w, "cores": c} for a, b, w, c in pairs
        ],
        "ray_ddp_vs_plain_ddp_median": ratio,
        "ray_background_cores_median": background,
    }
    (RESULTS / "train_throughput.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
