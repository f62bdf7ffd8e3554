"""Serving fixtures: small bundles, and a real Serve instance with two apps over HTTP: `open`
(no keys; a retrieval model, a classifier, a generator, a captioner and an index) and `locked` (API keys required)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mmray.serving.auth import hash_key
from tests.support.ports import free_port
from tests.support.serving_bundles import dual_encoder_bundle, fusion_bundle, generation_bundle, index_bundle

API_KEY = "test-key-3f9a1c"
ENV_KEY = "env-key-77d2"
ADMIN_KEY = "admin-key-5be0"
LIMITS = {"max_image_pixels": 250_000, "max_body_bytes": 2_000_000, "max_text_chars": 200, "max_items": 8,
          "max_k": 50}  # fmt: skip


@dataclass
class Bundles:
    shapes: Path
    clip: Path
    index: Path
    classifier: Path
    clip_b: Path
    index_b: Path
    painter: Path
    captioner: Path


@dataclass
class ServedApps:
    open_url: str
    locked_url: str
    bundles: Bundles


@pytest.fixture(scope="session")
def bundles(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    root = tmp_path_factory.mktemp("serving-bundles")
    clip = dual_encoder_bundle(tiny_shapes, root / "clip", seed=0)
    clip_b = dual_encoder_bundle(tiny_shapes, root / "clip-b", seed=1)
    return Bundles(
        shapes=tiny_shapes,
        clip=clip,
        index=index_bundle(tiny_shapes, clip, root / "index"),
        classifier=fusion_bundle(tiny_shapes, root / "classifier"),
        clip_b=clip_b,
        index_b=index_bundle(tiny_shapes, clip_b, root / "index-b"),
        painter=generation_bundle(tiny_shapes, root / "painter", "vae"),
        captioner=generation_bundle(tiny_shapes, root / "captioner", "caption"),
    )


def small_deployments(models: list[str], retriever: bool = True) -> list[dict[str, Any]]:
    """Fractional CPUs so that two apps fit the tests' 2-CPU Ray."""
    names = [f"model_{m}" for m in models] + ["Ingress"] + (["RetrieverDeployment"] if retriever else [])
    return [{"name": name, "ray_actor_options": {"num_cpus": 0.1}} for name in names]


def serve_config(port: int, bundles: Bundles, keys_file: Path) -> dict[str, Any]:
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "open",
                "route_prefix": "/",
                "import_path": "mmray.serving.app:build_app",
                "args": {
                    "models": {
                        "retrieval": str(bundles.clip),
                        "classifier": str(bundles.classifier),
                        "painter": str(bundles.painter),
                        "captioner": str(bundles.captioner),
                    },
                    "index": str(bundles.index),
                    "limits": LIMITS,
                    "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
                    "auth": {"keys_env": "MMRAY_TEST_NO_KEYS"},
                },
                "deployments": small_deployments(["retrieval", "classifier", "painter", "captioner"]),
            },
            {
                "name": "locked",
                "route_prefix": "/locked",
                "import_path": "mmray.serving.app:build_app",
                "args": {
                    "models": {"retrieval": str(bundles.clip)},
                    "index": str(bundles.index),
                    "auth": {
                        "keys_env": "MMRAY_TEST_KEYS",
                        "keys_file": str(keys_file),
                        "admin_keys_env": "MMRAY_TEST_ADMIN_KEYS",
                    },
                    "reload_timeout_s": 120,
                },
                "deployments": small_deployments(["retrieval"]),
            },
        ],
    }


@pytest.fixture(scope="package")
def served(ray_session: None, bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApps]:
    """Both apps on a real Serve over HTTP; stopped (serve.shutdown) when the serving tests end."""
    from mmray.serving.runner import check_serve_config, start_serving, stop_serving

    keys_file = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    keys_file.write_text(f"# test keys\n{hash_key(API_KEY)}\n")
    port = free_port()
    os.environ.update(MMRAY_TEST_KEYS=ENV_KEY, MMRAY_TEST_ADMIN_KEYS=ADMIN_KEY)
    try:
        config = check_serve_config(serve_config(port, bundles, keys_file), "test config")
    finally:
        del os.environ["MMRAY_TEST_KEYS"], os.environ["MMRAY_TEST_ADMIN_KEYS"]
    address = start_serving(config, timeout_s=300)
    yield ServedApps(address, f"{address}/locked", bundles)
    stop_serving(["open", "locked"])
