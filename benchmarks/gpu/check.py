"""The GPU check (`make gpu-check`): mmray's training on one device, in this process, without Ray.

1. Every task kind (retrieval, predict, vae, gan, caption) trains 2 short epochs on generated shapes data
   (576 images; 192 with `--size tiny`) with `precision: auto`, twice: straight through, and stopped after
   epoch 1 then resumed from its checkpoint. The resumed epoch must equal the uninterrupted one (its
   losses, to a tolerance on CUDA), which needs the optimizer state on the parameters' device (the loop
   refuses otherwise) and every RNG restored (the GAN's and VAE's noise comes from the CUDA generator on a GPU).
2. The seed's own model, ResNet-50 + a BERT-base-sized text tower (randomly initialised, mmray's dual
   encoder and InfoNCE loss, AdamW, bf16 autocast): training samples/s, FLOPs per step counted by PyTorch's
   FlopCounterMode, and MFU against the GPU's dense bf16 peak (and against a measured bf16 matmul).

Needs PyTorch, torchvision, transformers and mmray's small pure-Python needs (pydantic, pyyaml, pycocotools,
pycocoevalcap's BLEU/CIDEr): no Ray, no faiss, no boto3, no network. `make gpu-check-wheels` prepares those
for a bare Python 3.12 GPU machine (README: "The GPU check"). `--device cpu --size tiny` runs it on a CPU
in a minute or two (`make test` does). Prints one line per check and writes the figures as JSON (--out).
Usage: python benchmarks/gpu/check.py [--device auto|cuda|cpu] [--size full|tiny] [--out DIR] [--seed-only]
       [--compile] [--precision auto|fp32|bf16|fp16] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))  # mmray itself, where it is not installed (a bare GPU machine)

import torch  # noqa: E402

from mmray.config import ShapesData, TrainJob  # noqa: E402
from mmray.data.shapes import dataset_dir, generate_shapes  # noqa: E402
from mmray.devices import PrecisionChoice, auto_candidates, pick_device, resolve_precision  # noqa: E402
from mmray.train.local_run import run_local  # noqa: E402
from mmray.train.precision_probe import fastest_precision  # noqa: E402

DENSE_BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts), by a substring of the GPU's name."""
ENCODER = {
    "embed_dim": 32,
    "image": {"kind": "small_cnn", "width": 8, "blocks": 4},
    "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 40},
}
EVALUATION = {"images": 48, "candidates": 10, "grid_captions": 3, "grid_samples": 2}
TASKS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "retrieval": ({"kind": "dual_encoder", **ENCODER}, {"kind": "retrieval"}, "captions"),
    "predict": (
        {"kind": "fusion", "encoder": ENCODER, "fusion": {"kind": "gated", "hidden": 32}},
        {"kind": "predict", "heads": {"present": {"kind": "multiclass", "target": "present", "classes": 2}}},
        "questions",
    ),
    "vae": (
        {"kind": "conditional_vae", "encoder": ENCODER, "latent_dim": 4, "width": 8},
        {"kind": "vae", "kl_warmup_steps": 10, "evaluation": EVALUATION},
        "captions",
    ),
    "gan": (
        {"kind": "conditional_gan", "encoder": ENCODER, "noise_dim": 8, "width": 8},
        {"kind": "gan", "evaluation": EVALUATION},
        "captions",
    ),
    "caption": (
        {"kind": "caption_decoder", "encoder": ENCODER, "width": 32, "layers": 1, "heads": 2},
        {"kind": "caption", "evaluation": {"images": 24, "beam": 2}},
        "captions",
    ),
}


def task_job(
    kind: str, data: ShapesData, runs: Path, name: str, evaluator: str | None, precision: str = "auto"
) -> TrainJob:
    model, task, text = TASKS[kind]
    if "evaluation" in task and kind in ("vae", "gan"):
        task = {**task, "evaluation": {**task["evaluation"], "evaluator": evaluator}}
    train = {"epochs": 2, "batch_size": 32, "lr": 0.003, "log_every_steps": 1000, "eval_batch_size": 64,
             "precision": precision}  # fmt: skip
    extra = {"init_from": evaluator} if kind == "gan" else {}
    job = {"kind": "train", "name": name, "storage_root": str(runs), "model": model, "task": task,
           "data": data.model_copy(update={"text": text}).model_dump(),
           "train": train, **extra}  # fmt: skip
    return TrainJob.model_validate(job)


def largest_difference(first: dict[str, Any], second: dict[str, Any]) -> tuple[str, float]:
    """The training loss (train_*) that differs most between two epochs' metrics, relatively."""
    differences = [
        (key, abs(value - second[key]) / max(abs(value), 1e-12))
        for key, value in first.items()
        if key.startswith("train_") and isinstance(value, float)
    ]
    return max(differences, key=lambda item: item[1])


def check_resumption(device: str, work: Path, tolerance: float, images: int, val_images: int) -> list[dict[str, Any]]:
    """Each task kind straight through vs stopped after epoch 1 and resumed; the retrieval run evaluates the
    generators."""
    data = ShapesData(source="shapes", root=str(work / "data"), images=images, val_images=val_images, seed=1)
    generate_shapes(data, dataset_dir(data))
    results, evaluator = [], None
    for kind in TASKS:
        started = time.perf_counter()
        halves = task_job(kind, data, work / "runs", f"{kind}-resumed", evaluator)
        run_local(halves, device=device, stop_after_epoch=1)
        resumed = run_local(halves, device=device)  # keeps the precision `auto` chose for its first half
        chosen = resumed.metrics["precision"]
        straight = run_local(task_job(kind, data, work / "runs", f"{kind}-straight", evaluator, chosen), device=device)
        key, difference = largest_difference(straight.history[1], resumed.history[1])
        result = {
            "task": kind,
            "precision": chosen,
            "epoch_2_losses": {k: v for k, v in straight.history[1].items() if k.startswith("train_")},
            "largest_relative_difference": difference,
            "compared": key,
            "seconds": round(time.perf_counter() - started, 1),
            "ok": difference <= tolerance,
        }
        results.append(result)
        status = "ok" if result["ok"] else "FAILED"
        print(f"[{status}] {kind}: 2 epochs in {result['precision']}; resumed after epoch 1, {key} differs by "
              f"{difference:.2e} (tolerance {tolerance:g}) from the uninterrupted run  ({result['seconds']} s)",
              flush=True)  # fmt: skip
        if kind == "retrieval":
            evaluator = straight.run_dir
    return results


def seed_model(size: str, device: torch.device) -> tuple[torch.nn.Module, Any, dict[str, int]]:
    """mmray's dual encoder with the seed's towers (ResNet-50 + BERT-base-sized, random init) and InfoNCE;
    `tiny`: ResNet-18 + a 2-layer BERT on small inputs, for CPUs."""
    from mmray.config.model import IMAGENET_MEAN, IMAGENET_STD, DualEncoderConfig
    from mmray.config.training import InfoNceLossConfig
    from mmray.data.processor import ImageTransform, Processor
    from mmray.data.tokenizers import WordTokenizer
    from mmray.losses.representation import RepresentationLoss
    from mmray.models.factory import build_dual_encoder

    full = size == "full"
    bert = {"model_type": "bert", "hidden_size": 768 if full else 128, "num_hidden_layers": 12 if full else 2,
            "num_attention_heads": 12 if full else 2, "intermediate_size": 3072 if full else 512,
            "vocab_size": 30522}  # fmt: skip
    shape = {"batch": 256 if full else 8, "image_size": 224 if full else 64, "tokens": 64 if full else 16}
    config = DualEncoderConfig.model_validate({
        "kind": "dual_encoder", "embed_dim": 512 if full else 64,
        "image": {"kind": "torchvision", "name": "resnet50" if full else "resnet18", "image_size": shape["image_size"]},
        "text": {"kind": "huggingface", "architecture": bert, "max_length": shape["tokens"]},
    })  # fmt: skip
    processor = Processor(
        ImageTransform(shape["image_size"], IMAGENET_MEAN, IMAGENET_STD), WordTokenizer.build(["a"], shape["tokens"])
    )
    model = build_dual_encoder(config, processor).to(device)
    if device.type == "cuda":
        model.image_encoder.to(memory_format=torch.channels_last)
    return model, RepresentationLoss(InfoNceLossConfig(kind="infonce")), shape


def measure_seed_model(
    size: str,
    device: torch.device,
    steps: int,
    compiled: bool = False,
    precision_setting: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Training samples/s of the seed's model in bf16 autocast, FLOPs per step and MFU; `compiled`: the
    model under torch.compile (FLOPs counted on the eager model first, the same arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, loss_fn, shape = seed_model(size, device)
    shape["batch"] = batch_size or shape["batch"]
    forward = model
    batch = shape["batch"]
    images = torch.randn(batch, 3, shape["image_size"], shape["image_size"], device=device)  # (B, 3, S, S)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    ids = torch.randint(1000, 30000, (batch, shape["tokens"]), device=device)  # (B, L)
    mask = torch.ones_like(ids, dtype=torch.bool)  # (B, L)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    default = "bf16" if device.type == "cuda" else "auto"  # CPUs: what they run best
    precision = resolve_precision(precision_setting or default, device)  # type: ignore[arg-type]
    timed: dict[str, float] = {}
    candidates = auto_candidates(device)
    if precision_setting == "auto" and len(candidates) > 1:

        def trial(choice: PrecisionChoice) -> None:
            with choice.autocast():
                loss_fn(model(images, ids, mask)).loss.backward()

        precision, timed = fastest_precision(trial, candidates, model, device)  # type: ignore[assignment]

    def step() -> None:
        with precision.autocast():
            loss = loss_fn(forward(images, ids, mask)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    if compiled:
        forward = torch.compile(model)
    for _ in range(3):
        step()  # warm-up: kernels chosen (and compiled), memory allocated
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    seconds = (time.perf_counter() - started) / steps
    figures: dict[str, Any] = {
        "model": ("resnet50 + bert-base" if size == "full" else "resnet18 + bert-2")
        + f", infonce, {precision.precision}"
        + (", torch.compile" if compiled else ""),
        **shape,
        "samples_per_s": batch / seconds,
        "step_ms": seconds * 1e3,
        "tflops_per_step": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        **({"auto_timed_samples_per_s": {p: rate * batch for p, rate in timed.items()}} if timed else {}),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((value for key, value in DENSE_BF16_PEAK_TFLOPS.items() if key in name), None)
        matmul = measured_matmul_tflops(device)
        figures.update(
            gpu=name, measured_bf16_matmul_tflops=matmul, mfu_vs_measured_matmul=figures["achieved_tflops"] / matmul
        )
        if peak is not None:
            figures.update(dense_bf16_peak_tflops=peak, mfu=figures["achieved_tflops"] / peak)
    return figures


def measured_matmul_tflops(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)  # (S, S)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cuda, cuda:N or cpu")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="the seed model and data, or tiny")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps of the seed's model")
    parser.add_argument("--out", default="runs/gpu-check", help="where gpu_check.json is written")
    parser.add_argument("--seed-only", action="store_true", help="measure the seed's model alone (no task checks)")
    parser.add_argument("--compile", action="store_true", help="measure the seed's model under torch.compile")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="the seed model's (bf16 on GPUs)")
    parser.add_argument("--batch", type=int, help="the seed model's batch (default 256; 8 with --size tiny)")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    candidates = auto_candidates(device)
    auto = " / ".join(candidates) + " timed at a run's first step" if len(candidates) > 1 else candidates[0]
    what = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device {device} ({what}), torch {torch.__version__}, precision auto → {auto}", flush=True)
    report: dict[str, Any] = {"device": str(device), "name": what, "torch": torch.__version__, "auto": auto}
    report["tasks"] = []
    if not args.seed_only:
        with tempfile.TemporaryDirectory(prefix="mmray-gpu-check-") as tmp:
            images, val_images = (576, 96) if args.size == "full" else (192, 48)
            report["tasks"] = check_resumption(str(device), Path(tmp), 1e-3 if cuda else 1e-6, images, val_images)
    if cuda:  # the resumption checks need deterministic kernels; the speed measurement wants the fastest
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    report["seed_model"] = measure_seed_model(args.size, device, args.steps, args.compile, args.precision, args.batch)
    seed = report["seed_model"]
    mfu = f", MFU {seed['mfu']:.1%} of {seed['dense_bf16_peak_tflops']:g} TFLOP/s" if "mfu" in seed else ""
    print(f"[ok] seed model ({seed['model']}): {seed['samples_per_s']:.0f} samples/s at batch {seed['batch']}, "
          f"{seed['achieved_tflops']:.1f} TFLOP/s{mfu}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=float))
    failed = [task["task"] for task in report["tasks"] if not task["ok"]]
    print(json.dumps({"ok": not failed, "failed": failed, "report": str(out / "gpu_check.json")}))
    return 1 if failed or math.isnan(seed["samples_per_s"]) else 0


if __name__ == "__main__":
    sys.exit(main())
