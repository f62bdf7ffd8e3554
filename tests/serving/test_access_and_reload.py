"""API keys on the `locked` app (query and admin scopes), keys kept out of logs, and hot reload: refused
outside the allowed roots, rolled back when a bundle fails to load, and, under load, committed only once a
slow bundle has loaded everywhere, without losing a request."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from mmray.serving.model_service import ModelService
from tests.serving.conftest import ADMIN_KEY, API_KEY, ENV_KEY, ServedApps
from tests.serving.helpers import assert_error, b64, post, val_images

pytestmark = pytest.mark.slow


def test_every_v1_route_needs_a_key_when_keys_are_set(served: ServedApps) -> None:
    url = served.locked_url
    assert requests.get(url + "/healthz", timeout=30).status_code == 200
    page = requests.get(url + "/", timeout=30)
    assert page.status_code == 200 and 'id="key"' in page.text
    for path, body in (("/v1/search", {"text": "a red circle"}), ("/v1/embed", {"texts": ["a"]})):
        missing = post(url, path, body)
        assert_error(missing, 401, "Authorization")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(post(url, path, body, key="wrong-key"), 401, "Authorization")
        assert post(url, path, body, key=API_KEY).status_code == 200, "a key from the keys file"
        assert post(url, path, body, key=ENV_KEY).status_code == 200, "a key from the environment variable"
    assert_error(requests.get(url + "/v1/models", timeout=30), 401, "Authorization")
    assert requests.get(served.open_url + "/v1/models", timeout=30).status_code == 200, "the open app needs none"


def test_keys_never_reach_the_logs(served: ServedApps) -> None:
    import ray

    post(served.locked_url, "/v1/search", {"text": "a red circle"}, key=API_KEY)
    post(served.locked_url, "/v1/search", {"text": "a red circle"}, key=API_KEY + "x")
    time.sleep(1.0)
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"  # type: ignore[attr-defined]
    files = [path for path in logs.rglob("*") if path.is_file()]
    assert files
    for path in files:
        content = path.read_bytes()
        assert API_KEY.encode() not in content and ENV_KEY.encode() not in content, path


def _searches_under_load(url: str, image: str, stop: threading.Event, outcomes: list[tuple[int, str | None]]) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    while not stop.is_set():
        response = session.post(url + "/v1/search", json={"image": image, "target": "images", "k": 3}, timeout=60)
        outcomes.append((response.status_code, response.json().get("model_version")))


def _slow_copy(bundle: Path, target: Path, delay_s: float) -> threading.Thread:
    """A copy of `bundle` whose weights file is a pipe: reading it blocks until a thread writes the weights
    after `delay_s` (a bundle that takes longer to load than any timeout the app keeps)."""
    shutil.copytree(bundle, target)
    weights = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").unlink()
    os.mkfifo(target / "model.safetensors")

    def feed() -> None:
        time.sleep(delay_s)
        with open(target / "model.safetensors", "wb") as pipe:
            pipe.write(weights)

    return threading.Thread(target=feed, daemon=True)


def test_reload_needs_an_admin_key_and_bundles_under_the_allowed_roots(served: ServedApps, tmp_path: Path) -> None:
    url, bundles = served.locked_url, served.bundles
    swap = {"models": {"retrieval": str(bundles.clip_b)}, "index": str(bundles.index_b)}
    assert_error(post(url, "/v1/admin/reload", swap), 401, "Authorization")
    message = assert_error(post(url, "/v1/admin/reload", swap, key=API_KEY), 403, "Authorization")
    assert "needs an admin key" in message
    opened = assert_error(post(served.open_url, "/v1/admin/reload", swap), 403, "Authorization")
    assert "no admin keys" in opened, "an app without admin keys refuses every reload"
    outside = tmp_path / "elsewhere"
    shutil.copytree(bundles.clip_b, outside)
    roots = assert_error(post(url, "/v1/admin/reload", {"models": {"retrieval": str(outside)}}, key=ADMIN_KEY),
                         403, "models.retrieval")  # fmt: skip
    assert str(outside) in roots and str(bundles.clip.parent) in roots, "the refusal names the allowed roots"
    assert ADMIN_KEY not in json.dumps(requests.get(url + "/healthz", timeout=30).json())


def test_a_bundle_that_fails_to_load_is_rolled_back_and_reported(served: ServedApps) -> None:
    url, bundles = served.locked_url, served.bundles
    old = ModelService.open(str(bundles.clip)).version
    broken = bundles.clip.parent / "broken-clip-b"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(bundles.clip_b, broken)
    (broken / "model.safetensors").write_bytes(b"these are not weights")
    swap = {"models": {"retrieval": str(broken)}, "index": str(bundles.index_b)}
    failed = assert_error(post(url, "/v1/admin/reload", swap, key=ADMIN_KEY), 422, None)
    assert "failed to load, so nothing changed" in failed and "model" in failed and str(broken.name) in failed
    image = b64(val_images(bundles.shapes, 1)[0].read_bytes())
    after = post(url, "/v1/search", {"image": image, "target": "images", "k": 1}, key=API_KEY)
    assert after.status_code == 200 and after.json()["model_version"] == old, "the app still serves the old pair"
    ready = requests.get(url + "/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["reloading"] is False


def test_reload_of_a_slow_bundle_under_load_commits_once_loaded_without_losing_a_request(served: ServedApps) -> None:
    url, bundles = served.locked_url, served.bundles
    old, new = ModelService.open(str(bundles.clip)).version, ModelService.open(str(bundles.clip_b)).version
    refused = post(url, "/v1/admin/reload", {"models": {"retrieval": str(bundles.clip_b)}}, key=ADMIN_KEY)
    message = assert_error(refused, 409, "index")
    assert old in message and new in message, "a model without its index is refused, naming both versions"
    unknown = post(url, "/v1/admin/reload", {"models": {"other": str(bundles.clip_b)}}, key=ADMIN_KEY)
    assert_error(unknown, 422, "models.other")

    slow = bundles.clip.parent / "slow-clip-b"
    shutil.rmtree(slow, ignore_errors=True)
    feeder = _slow_copy(bundles.clip_b, slow, delay_s=8.0)  # longer than a replica may stay silent (5 s)
    image = b64(val_images(bundles.shapes, 1)[0].read_bytes())
    outcomes: list[tuple[int, str | None]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_searches_under_load, args=(url, image, stop, outcomes)) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    feeder.start()
    started = time.monotonic()
    swap = {"models": {"retrieval": str(slow)}, "index": str(bundles.index_b)}
    reloaded = post(url, "/v1/admin/reload", swap, key=ADMIN_KEY)
    took = time.monotonic() - started
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert reloaded.status_code == 200, reloaded.text
    replicas = reloaded.json()["replicas"]
    assert replicas["staged"] == replicas["serving"] == replicas["replicas"] >= 2 and took >= 7.0
    assert outcomes and all(status == 200 for status, _ in outcomes), [o for o in outcomes if o[0] != 200][:5]
    versions = [version for _, version in outcomes]
    assert old in versions and new in versions and versions[-1] == new
    assert versions.index(new) > versions.index(old) and new not in versions[: versions.index(new)]
    models = requests.get(url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    assert models["models"]["retrieval"]["model_version"] == new and models["index"]["model_version"] == new

    back = {"models": {"retrieval": str(bundles.clip)}, "index": str(bundles.index)}
    assert post(url, "/v1/admin/reload", back, key=ADMIN_KEY).status_code == 200
