"""Training speed of the shapes-clip model in each precision this machine can run, and `auto`'s choice.

One process, the job's model, task and batch size, AdamW: samples/s of full training steps (forward,
InfoNCE, backward, optimizer) under each precision's autocast, after a warm-up step, in alternating rounds
(a shared machine's speed drifts). Prints the table and the ratio of the precision `auto` picks here (on a
GPU: timed on the first batch, as a run does) to the fastest one measured; the target is at least 0.9 on
any machine.
Usage: python benchmarks/precision.py [--device auto|cpu|cuda] [--batch 256] [--steps 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from mmray.config import TrainJob, load_job
from mmray.devices import PrecisionChoice, auto_candidates, cpu_description, pick_device, resolve_precision
from mmray.models.registry import build_processor
from mmray.tasks.base import Batch, StepContext, Task
from mmray.tasks.registry import task_class
from mmray.train.loop import optimizer_for
from mmray.train.precision_probe import fastest_precision

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "shapes-clip.yaml"


def runnable_precisions(device: torch.device) -> list[str]:
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ["fp32", "fp16", *(["bf16"] if major >= 8 else [])]
    return ["fp32", "bf16"]


def training_setup(spec: TrainJob, device: torch.device, batch: int) -> tuple[Task, torch.nn.Module, Batch]:
    """The job's task and a fresh model (seeded) on `device`, and one random batch of `batch` rows."""
    torch.manual_seed(0)
    processor = build_processor(spec.model, ["a small red circle at the top", "a big blue square on the left"])
    task = task_class(spec.task.kind)(spec.task, spec.model, processor)
    model = task.build_model().to(device)
    size, length = processor.image.size, processor.tokenizer.max_length
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)  # (B, 3, S, S)
    data = {
        "images": processor.normalize(pixels.to(device)),  # (B, 3, S, S)
        "caption_ids": torch.randint(4, processor.tokenizer.vocab_size, (batch, length), device=device),  # (B, L)
        "caption_mask": torch.ones(batch, length, dtype=torch.bool, device=device),  # (B, L)
    }
    return task, model, data


def samples_per_second(spec: TrainJob, precision: str, device: torch.device, batch: int, steps: int) -> float:
    task, model, data = training_setup(spec, device, batch)
    optimizer = optimizer_for([p for p in model.parameters() if p.requires_grad], spec.train.lr, 0.05)
    choice = resolve_precision(precision, device)  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler(device.type, enabled=choice.needs_grad_scaler)

    def step(number: int) -> None:
        output = task.training_step(model, data, "model", StepContext(number, choice.autocast))
        scaler.scale(output.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step(0)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for number in range(steps):
        step(number + 1)
    synchronize()
    return batch * steps / (time.perf_counter() - started)


def auto_choice(spec: TrainJob, device: torch.device, batch: int) -> str:
    """What `auto` trains this job in here: the device's one candidate, or the fastest one timed on a first
    batch as a run's first step does (`mmray.train.precision_probe`)."""
    candidates = auto_candidates(device)
    if len(candidates) == 1:
        return candidates[0]
    task, model, data = training_setup(spec, device, batch)

    def step(choice: PrecisionChoice) -> None:
        task.training_step(model, data, "model", StepContext(0, choice.autocast)).loss.backward()

    choice, _ = fastest_precision(step, candidates, model, device)
    return choice.precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=256, help="the shapes-clip job's global batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_job(JOB, [])
    assert isinstance(spec, TrainJob)
    device = pick_device(args.device)
    precisions = runnable_precisions(device)
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(args.rounds):
        for precision in precisions:
            rates[precision].append(samples_per_second(spec, precision, device, args.batch, args.steps))
    median = {p: statistics.median(values) for p, values in rates.items()}
    auto = auto_choice(spec, device, args.batch)
    fastest = max(median, key=lambda p: median[p])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_description()})"
    print(f"shapes-clip model, batch {args.batch}, {device} = {where}, {torch.get_num_threads()} threads")
    print("| precision | samples/s | vs fastest |")
    print("| --- | ---: | ---: |")
    for precision in precisions:
        mark = " (auto)" if precision == auto else ""
        print(f"| {precision}{mark} | {median[precision]:.1f} | {median[precision] / median[fastest]:.2f} |")
    ratio = median[auto] / median[fastest]
    verdict = "meets" if ratio >= 0.9 else "MISSES"
    print(f"auto picks {auto}: {ratio:.2f} of the fastest ({fastest}); {verdict} the ≥ 0.9 target")
    print(json.dumps({"device": where, "auto": auto, "fastest": fastest, "auto_vs_fastest": ratio, **median}))
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
