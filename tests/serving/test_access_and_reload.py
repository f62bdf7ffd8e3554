"""API keys on the `locked` app, keys kept out of logs, and hot reload under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from mmray.serving.model_service import ModelService
from tests.serving.conftest import API_KEY, ENV_KEY, ServedApps
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


def test_reload_swaps_model_and_index_under_load_without_losing_a_request(served: ServedApps) -> None:
    url, bundles = served.locked_url, served.bundles
    old, new = ModelService.open(str(bundles.clip)).version, ModelService.open(str(bundles.clip_b)).version
    refused = post(url, "/v1/admin/reload", {"models": {"retrieval": str(bundles.clip_b)}}, key=API_KEY)
    message = assert_error(refused, 409, "index")
    assert old in message and new in message, "a model without its index is refused, naming both versions"
    unknown = post(url, "/v1/admin/reload", {"models": {"other": str(bundles.clip_b)}}, key=API_KEY)
    assert_error(unknown, 422, "models.other")

    image = b64(val_images(bundles.shapes, 1)[0].read_bytes())
    outcomes: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        while not stop.is_set():
            response = session.post(url + "/v1/search", json={"image": image, "target": "images", "k": 3}, timeout=60)
            outcomes.append((response.status_code, response.json().get("model_version")))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    swap = {"models": {"retrieval": str(bundles.clip_b)}, "index": str(bundles.index_b)}
    reloaded = post(url, "/v1/admin/reload", swap, key=API_KEY)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["replicas"]["ready"] == reloaded.json()["replicas"]["replicas"] >= 2
    assert outcomes and all(status == 200 for status, _ in outcomes), [o for o in outcomes if o[0] != 200][:5]
    versions = [version for _, version in outcomes]
    assert old in versions and new in versions and versions[-1] == new
    assert versions.index(new) > versions.index(old)
    models = requests.get(url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).json()
    assert models["models"]["retrieval"]["model_version"] == new and models["index"]["model_version"] == new

    back = {"models": {"retrieval": str(bundles.clip)}, "index": str(bundles.index)}
    assert post(url, "/v1/admin/reload", back, key=API_KEY).status_code == 200
