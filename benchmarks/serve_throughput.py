"""Serving throughput: `/v1/embed` over HTTP on Ray Serve against the same model called directly.

In one run, for text and for image requests (one text or one JPEG per request): requests/s and
p50 / p99 latency at each concurrency (default 1, 8, 64) with `@serve.batch` on (max_batch_size 64)
and off (max_batch_size 1), and the same `ModelService` called in this process with batches of 64
calls and one call at a time. A bare Serve app of the same shape (apps/bare_serve_app.py: a FastAPI
ingress calling a second deployment through a handle, which echoes the body: no model, no checks)
measures what Serve and HTTP themselves cost per request on this machine. The apps are deployed from
one Serve config, as `mmray serve` deploys one; where the machine has a GPU, the direct calls and each
app's model replica (half the GPU each) run on it. Ratios printed (at the highest concurrency): Serve + HTTP
÷ direct batched, batching on ÷ off, and mmray's app ÷ the bare Serve app. The model is `--model`
(default runs/shapes-clip, after `make demo`), or a randomly initialised model of
jobs/shapes-clip.yaml's architecture when that is missing (the compute is the same). Load comes from
an aiohttp client in this process, on the same machine. `--direct-only` measures the direct calls alone
(no Ray needed: the model's own speed on a machine where Ray is not installed, such as a bare GPU machine).
Usage: python benchmarks/serve_throughput.py [--model runs/shapes-clip] [--seconds 6] [--concurrency 1 8 64]
       [--direct-only] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import torch
import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray import storage
from mmray.artifacts.model_bundle import write_bundle
from mmray.config import ShapesData, TrainJob
from mmray.data.coco import load_coco
from mmray.data.shapes import generate_shapes, split_paths
from mmray.models.registry import build_model, build_processor
from mmray.serving.calls import EmbedCall
from mmray.serving.model_service import ModelService

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 64


def sample_data(directory: Path) -> tuple[list[str], list[bytes]]:
    """Captions and JPEG bytes of a small generated shapes split (the demo's image size)."""
    generate_shapes(ShapesData(source="shapes", root=str(directory), images=200, val_images=64, seed=3), str(directory))
    split = split_paths(str(directory), "val")
    dataset = load_coco(split.captions, split.images, split.instances, progress=False)
    texts = [caption for record in dataset.records for caption in record.captions]
    images = [storage.read_bytes(record.image_uri) for record in dataset.records]
    return texts, images


def model_bundle(requested: str, directory: Path, texts: list[str]) -> str:
    if storage.exists(storage.join(requested, "best_model.json")) or storage.exists(
        storage.join(requested, "bundle.json")
    ):
        return str(Path(requested).resolve())
    spec = TrainJob.model_validate(yaml.safe_load((ROOT / "jobs" / "shapes-clip.yaml").read_text()))
    processor = build_processor(spec.model, texts)
    print(f"{requested} has no model; using a random model of jobs/shapes-clip.yaml's architecture")
    write_bundle(directory, build_model(spec.model, processor), spec.model, processor, spec.task)
    return str(directory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_config(model: str, port: int, gpu: bool) -> dict[str, Any]:
    """Three apps in one Serve config, deployed as `mmray serve` deploys one: mmray's app with batching
    on and off (each model replica on half the GPU where there is one) and the bare app."""
    model_options = {"num_cpus": 0.5, **({"num_gpus": 0.5} if gpu else {})}
    applications: list[dict[str, Any]] = [
        {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": "mmray.serving.app:build_app",
            "args": {
                "models": {"clip": model},
                "batching": {"max_batch_size": size, "batch_wait_timeout_s": 0.005},
                "auth": {"keys_env": "MMRAY_BENCH_NO_KEYS"},
            },
            "deployments": [{"name": "model_clip", "ray_actor_options": model_options}],
        }
        for name, size in (("batched", BATCH), ("unbatched", 1))
    ]
    applications.append({"name": "bare", "route_prefix": "/bare", "import_path": "bare_serve_app:app"})
    return {"http_options": {"host": "127.0.0.1", "port": port}, "applications": applications}


def start_apps(model: str, port: int, gpu: bool) -> str:
    from mmray.serving.runner import check_serve_config, start_serving

    # Serve imports `bare_serve_app` in Ray's worker processes, which inherit this variable.
    paths = [
        str(Path(__file__).resolve().parent / "apps"),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    return start_serving(check_serve_config(serve_config(model, port, gpu), "benchmark config"))


async def http_load(url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float) -> dict[str, float]:
    """Requests/s and latency percentiles of `concurrency` clients posting in a loop for `seconds`
    (after a one-second warm-up that is not counted)."""
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()
    warm_until, stop_at = start + 1.0, start + 1.0 + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(offset: int) -> None:
            nonlocal failures
            sent = offset
            while (now := time.perf_counter()) < stop_at:
                async with session.post(url, json=bodies[sent % len(bodies)]) as response:
                    await response.read()
                    if now >= warm_until:
                        if response.status == 200:
                            latencies.append(time.perf_counter() - now)
                        else:
                            failures += 1
                sent += concurrency

        await asyncio.gather(*(client(i) for i in range(concurrency)))
    latencies.sort()
    if not latencies:
        raise RuntimeError(f"{url}: every request failed ({failures})")
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "failures": failures,
    }


def direct_rate(service: ModelService, calls: list[EmbedCall], batch: int, seconds: float) -> float:
    """Calls answered per second by `embed_many` on batches of `batch` calls."""
    service.embed_many(calls[:batch])
    done, position, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [calls[(position + i) % len(calls)] for i in range(batch)]
        service.embed_many(chunk)
        done, position = done + batch, position + batch
    return done / (time.perf_counter() - start)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_throughput.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/shapes-clip")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--direct-only", action="store_true", help="the direct calls alone, without Ray Serve")
    parser.add_argument("--out", default=str(RESULTS), help="where serve_throughput.json is written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmray-serve-bench-") as tmp:
        texts, images = sample_data(Path(tmp) / "shapes")
        model = model_bundle(args.model, Path(tmp) / "model", texts)
        service = ModelService.open(model, "auto")
        print(f"model {model} on {service.device}", flush=True)
        calls = {"text": [EmbedCall([t]) for t in texts], "image": [EmbedCall([], [i]) for i in images]}
        bodies = {
            "text": [{"texts": [t]} for t in texts],
            "image": [{"images": [base64.b64encode(i).decode()]} for i in images],
        }
        rows: list[dict[str, Any]] = []
        for kind in ("text", "image"):
            for batch, mode in ((BATCH, "direct batched"), (1, "direct single")):
                rate = direct_rate(service, calls[kind], batch, args.seconds)
                rows.append({"input": kind, "mode": mode, "concurrency": batch, "requests_per_s": rate})
                print(f"{kind:5} {mode:15} batch {batch:>3}: {rate:8.1f} calls/s", flush=True)
        device = service.device.type
        del service
        torch.cuda.empty_cache()
        if args.direct_only:
            for kind in ("text", "image"):
                batched, single = (r["requests_per_s"] for r in rows if r["input"] == kind)
                print(f"{kind}: direct batched ÷ single = {batched / single:.1f}")
            write_summary(Path(args.out), {"model": args.model, "device": device, "cpus": os.cpu_count(), "rows": rows})
            return
        base = start_apps(model, free_port(), gpu=device == "cuda")
        for kind in ("text", "image"):
            for app in ("batched", "unbatched", "bare"):
                for concurrency in args.concurrency:
                    url = f"{base}/{app}/v1/embed"
                    measured = asyncio.run(http_load(url, bodies[kind], concurrency, args.seconds))
                    rows.append({"input": kind, "mode": f"serve {app}", "concurrency": concurrency, **measured})
                    print(f"{kind:5} serve {app:9} c={concurrency:>3}: {measured['requests_per_s']:8.1f} req/s  "
                          f"p50 {measured['p50_ms']:7.1f} ms  p99 {measured['p99_ms']:7.1f} ms  "
                          f"failures {measured['failures']}", flush=True)  # fmt: skip
    top = max(args.concurrency)

    def rate(kind: str, mode: str, concurrency: int) -> float:
        return next(
            r["requests_per_s"] for r in rows if (r["input"], r["mode"], r["concurrency"]) == (kind, mode, concurrency)
        )

    ratios = {
        kind: {
            f"serve_batched_c{top}_over_direct_batched": rate(kind, "serve batched", top)
            / rate(kind, "direct batched", BATCH),
            f"batching_on_over_off_c{top}": rate(kind, "serve batched", top) / rate(kind, "serve unbatched", top),
            f"serve_batched_c{top}_over_bare_serve": rate(kind, "serve batched", top) / rate(kind, "serve bare", top),
        }
        for kind in ("text", "image")
    }
    print("\ninput  mode               conc    req/s   p50 ms   p99 ms")
    for row in rows:
        p50, p99 = row.get("p50_ms"), row.get("p99_ms")
        latency = f"{p50:8.1f} {p99:8.1f}" if p50 is not None else "       -        -"
        print(f"{row['input']:6} {row['mode']:17} {row['concurrency']:>5} {row['requests_per_s']:8.1f} {latency}")
    for kind, values in ratios.items():
        for name, value in values.items():
            print(f"{kind}: {name} = {value:.2f}")
    summary = {"model": args.model, "device": device, "cpus": os.cpu_count(), "rows": rows, "ratios": ratios}
    write_summary(Path(args.out), summary)
    from ray import serve

    serve.shutdown()


if __name__ == "__main__":
    main()
