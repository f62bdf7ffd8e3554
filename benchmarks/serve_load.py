"""Serving under load with faults: concurrent `/v1/search` and `/v1/embed` requests against an mmray app on
Ray Serve (two model replicas) through three phases: steady, one model replica killed (SIGKILL) early in the
phase, and a hot reload to another model + index pair early in the phase. Reports, per phase, requests,
failures (anything but HTTP 200), p50 / p99 latency, and the model versions searches answered with; the
targets are 0 failed requests in every phase and a p99 during the reload within 3× the steady p99.
Requests to a replica that dies are retried by the app on a live replica (its Serve handles), and a replica
that replaces it, or a reload, serves nothing until its bundles are loaded.
Bounded: `--seconds` per phase (default 60), `--concurrency` (default 32), loopback only, small random models
(the shapes architecture) over a generated split.
Usage: python benchmarks/serve_load.py [--seconds 60] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from mmray.artifacts.index_bundle import corpus_metadata, write_index_bundle
from mmray.artifacts.model_bundle import open_bundle, write_bundle
from mmray.config import ShapesData
from mmray.config.model import DualEncoderConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.data.coco import load_coco
from mmray.data.shapes import generate_shapes, split_paths
from mmray.data.tensors import split_to_tensors
from mmray.index.faiss_index import IndexSpec, build_index
from mmray.models.registry import build_model, build_processor
from mmray.serving.auth import hash_key
from mmray.tasks.evaluation import evaluation_context
from mmray.tasks.split_embedding import embed_split

ADMIN_KEY = "load-benchmark-admin"
APP = "mmray-load"
ROUTE = "/load"  # beside any app already at "/"
MODEL = {"embed_dim": 32, "image": {"kind": "small_cnn", "image_size": 32, "width": 8, "blocks": 3},
         "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 24}}  # fmt: skip


@dataclass
class Phase:
    """What one phase's requests met."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [float("nan")]
        return {"phase": self.name, "requests": len(self.latencies) + len(self.failures),
                "failed": len(self.failures), "p50_ms": 1e3 * statistics.median(ordered),
                "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                "search_versions": sorted(self.versions), "first_failures": self.failures[:3]}  # fmt: skip


def bundles(directory: Path) -> dict[str, Path]:
    """Two dual encoders (other seeds) and their indexes over a generated shapes split."""
    data = directory / "shapes"
    generate_shapes(ShapesData(source="shapes", root=str(data), images=200, val_images=64, seed=5), str(data))
    split = split_paths(str(data), "val")
    dataset = load_coco(split.captions, split.images, split.instances, progress=False)
    config = DualEncoderConfig.model_validate(MODEL)
    processor = build_processor(config, [c for r in dataset.records for c in r.captions])
    made: dict[str, Path] = {}
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model_dir = directory / f"model-{name}"
        write_bundle(model_dir, build_model(config, processor), config, processor, RetrievalTaskConfig())
        bundle = open_bundle(str(model_dir))
        images, texts = embed_split(bundle.model, split_to_tensors(dataset, processor), evaluation_context(bundle, 64))
        caption_ids = [cid for r in dataset.records for cid in r.caption_ids]
        indexes = {
            "images": build_index(
                images.numpy(), torch.tensor([r.image_id for r in dataset.records]).numpy(), IndexSpec(type="flat")
            ),
            "captions": build_index(texts.numpy(), torch.tensor(caption_ids).numpy(), IndexSpec(type="flat")),
        }
        manifest = {"model_version": bundle.version, "model_bundle": str(model_dir), "split": "val"}
        write_index_bundle(str(directory / f"index-{name}"), indexes, corpus_metadata(dataset), manifest)
        made[f"model_{name}"], made[f"index_{name}"] = model_dir, directory / f"index-{name}"
    return made


def serve_config(port: int, made: dict[str, Path]) -> dict[str, Any]:
    small = {"num_cpus": 0.1}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": APP, "route_prefix": ROUTE, "import_path": "mmray.serving.app:build_app",
            "args": {"models": {"retrieval": str(made["model_a"])}, "index": str(made["index_a"]),
                     "auth": {"admin_key_hashes": [hash_key(ADMIN_KEY)], "keys_env": "MMRAY_LOAD_NO_KEYS",
                              "admin_keys_env": "MMRAY_LOAD_NO_KEYS"},
                     "reload_timeout_s": 120},
            "deployments": [{"name": "model_retrieval", "num_replicas": 2, "ray_actor_options": small},
                            {"name": "RetrieverDeployment", "ray_actor_options": small},
                            {"name": "Ingress", "ray_actor_options": small}],
        }],
    }  # fmt: skip


def load_app_model_replicas(actors: Iterable[Any]) -> list[Any]:
    """This app's model replicas among `actors` (Serve names a replica's actor class
    `ServeReplica:<app>:<deployment>`); other apps on the cluster may serve a model under the same name."""
    return [a for a in actors if a.class_name == f"ServeReplica:{APP}:model_retrieval"]


def kill_a_model_replica() -> int:
    """SIGKILL to one live model replica's process (a crash); returns its pid."""
    from ray.util.state import list_actors

    replicas = load_app_model_replicas(list_actors(filters=[("state", "=", "ALIVE")], limit=1000))
    if not replicas:
        raise RuntimeError("no live model replica found to kill")
    pid = int(replicas[0].pid)
    os.kill(pid, signal.SIGKILL)
    return pid


async def _client(session: aiohttp.ClientSession, url: str, phase: list[Phase], until: list[float]) -> None:
    body_search = {"text": "a small red circle at the top", "k": 5}
    body_embed = {"texts": ["two big blue squares"]}
    turn = 0
    while time.monotonic() < until[0]:
        path, body = ("/v1/search", body_search) if turn % 2 == 0 else ("/v1/embed", body_embed)
        turn += 1
        started = time.monotonic()
        current = phase[0]
        try:
            async with session.post(url + path, json=body) as response:
                answer = await response.json(content_type=None)
                if response.status != 200:
                    current.failures.append(f"{path} HTTP {response.status}: {str(answer)[:160]}")
                    continue
                if path == "/v1/search":
                    current.versions.add(answer["model_version"])
        except (TimeoutError, aiohttp.ClientError) as exc:
            current.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        current.latencies.append(time.monotonic() - started)


async def run_phases(url: str, made: dict[str, Path], seconds: float, concurrency: int) -> list[Phase]:
    """The three phases back to back, `concurrency` clients all the while; faults come `seconds`/5 into their phase."""
    phases = [Phase("steady"), Phase("replica killed"), Phase("hot reload")]
    current: list[Phase] = [phases[0]]
    until = [time.monotonic() + 3 * seconds]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(_client(session, url, current, until)) for _ in range(concurrency)]
        await asyncio.sleep(seconds)
        current[0] = phases[1]
        await asyncio.sleep(seconds / 5)
        pid = await asyncio.to_thread(kill_a_model_replica)
        print(f"killed model replica pid {pid}", file=sys.stderr)
        await asyncio.sleep(seconds * 4 / 5)
        current[0] = phases[2]
        await asyncio.sleep(seconds / 5)
        swap = {"models": {"retrieval": str(made["model_b"])}, "index": str(made["index_b"])}
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        started = time.monotonic()
        async with session.post(url + "/v1/admin/reload", json=swap, headers=headers) as response:
            reloaded = (response.status, await response.text())
        print(f"reload answered {reloaded[0]} after {time.monotonic() - started:.1f} s", file=sys.stderr)
        if reloaded[0] != 200:
            phases[2].failures.append(f"reload HTTP {reloaded[0]}: {reloaded[1][:300]}")
        remaining = until[0] - time.monotonic()
        await asyncio.sleep(max(0.0, remaining))
        await asyncio.gather(*clients)
    return phases


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(seconds: float, concurrency: int, work: Path) -> dict[str, Any]:
    """Deploy the app, run the phases, delete the app; the per-phase summaries and the targets' verdicts."""
    from mmray.serving.runner import check_serve_config, start_serving, stop_serving

    made = bundles(work)
    url = start_serving(check_serve_config(serve_config(free_port(), made), "load benchmark config")) + ROUTE
    try:
        phases = asyncio.run(run_phases(url, made, seconds, concurrency))
    finally:
        stop_serving([APP])
    rows = [phase.summary() for phase in phases]
    steady, reload = rows[0]["p99_ms"], rows[2]["p99_ms"]
    return {"seconds_per_phase": seconds, "concurrency": concurrency, "phases": rows,
            "failed": sum(row["failed"] for row in rows), "reload_p99_vs_steady": reload / steady,
            "versions": {"a": open_bundle(str(made["model_a"])).version,
                         "b": open_bundle(str(made["model_b"])).version}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each of the three phases")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    from mmray.cluster.connection import connect

    connect()
    with tempfile.TemporaryDirectory(prefix="mmray-serve-load-") as tmp:
        result = measure(args.seconds, args.concurrency, Path(tmp))
    print("| phase | requests | failed | p50 ms | p99 ms | search model versions |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for row in result["phases"]:
        print(f"| {row['phase']} | {row['requests']} | {row['failed']} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
              f"{len(row['search_versions'])} |")  # fmt: skip
    print(f"p99 during the reload ÷ steady p99: {result['reload_p99_vs_steady']:.2f} (target ≤ 3); "
          f"failed requests: {result['failed']} (target 0)")  # fmt: skip
    print(json.dumps(result))
    return 0 if result["failed"] == 0 and result["reload_p99_vs_steady"] <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
