"""`mmray serve` in the foreground, called with `mmray query`, stopped by SIGTERM; stopped by Ctrl-C while its
apps start; a failed start on a cluster deletes its apps; `mmray api-key`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from mmray.config.serving import AuthSettings
from mmray.serving.auth import KeyChecker, read_key_hashes
from tests.serving.conftest import Bundles, free_port
from tests.serving.helpers import image_id, val_images
from tests.support.cli import invoke_mmray
from tests.support.processes import descendants_named
from tests.support.ray_lines import own_lines
from tests.train.conftest import REPO_ROOT, mmray_command

pytestmark = pytest.mark.slow
# The stop checks read `own_lines`: Ray's Serve controller logs a GCS call that timed out (3 s, a busy machine) as
# a warning with its traceback, which Ray forwards; the command must print no traceback of its own.


def local_config(bundles: Bundles, tmp_path: Path) -> Path:
    """serve/local.yaml on the test bundles, with CPU shares that fit beside the package's Serve."""
    config = yaml.safe_load((REPO_ROOT / "serve" / "local.yaml").read_text())
    application = config["applications"][0]
    application["args"]["models"] = {"retrieval": str(bundles.clip)}
    application["args"]["index"] = str(bundles.index)
    for deployment in application["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.own_ray  # `mmray serve` starts its own Ray and Serve
def test_serve_in_the_foreground_query_it_and_stop_it(bundles: Bundles, tmp_path: Path) -> None:
    """Stopped by SIGTERM once serving; its local Ray stops with it."""
    port = free_port()
    path = local_config(bundles, tmp_path)
    env = {**os.environ, "MMRAY_API_KEYS": "cli-test-key"}
    server = subprocess.Popen(
        mmray_command("serve", str(path), "--port", str(port)),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(server.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any(f"mmray is serving at {url}/" in line for line in list(lines)):  # said once every app is ready
            assert server.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the app did not start within 180 s"
            time.sleep(0.5)
        assert invoke_mmray("query", url, "ready", "--timeout", "5").returncode == 0
        image = val_images(bundles.shapes, 1)[0]
        refused = invoke_mmray("query", url, "search", "--text", "a red circle")
        assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
        found = invoke_mmray("query", url, "search", "--image", str(image), "--target", "images", "--k", "3", "--json",
                          "--key", "cli-test-key")  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["hits"][0]["id"] == image_id(image)
        table = invoke_mmray("query", url, "search", "--text", "a red circle", "--k", "2", "--key", "cli-test-key")
        assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 4, table.stdout
        bad = invoke_mmray("query", url, "search", "--text", "a red circle", "--k", "0", "--key", "cli-test-key")
        assert bad.returncode == 2 and "HTTP 422" in bad.stderr and "(field k)" in bad.stderr
        raylets = descendants_named(server.pid, "raylet")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        reader.join(timeout=10)
    output = "".join(lines)
    assert server.returncode == 0, output[-3000:]
    assert f"mmray is serving at {url}/" in output and "cli-test-key" not in output
    assert "stopping" in output and "SIGTERM received" not in output, output[-3000:]
    assert "Traceback" not in own_lines(output), own_lines(output)[-3000:]
    assert raylets and not any(Path(f"/proc/{pid}").exists() for pid in raylets), "the local Ray stopped with it"


@pytest.mark.own_ray
def test_ctrl_c_while_the_apps_start_stops_serve_cleanly(bundles: Bundles, tmp_path: Path) -> None:
    """SIGTERM takes the same path once `mmray serve` has connected (its handler raises what Ctrl-C raises):
    the foreground test stops a serving app with it."""
    log = tmp_path / "serve.log"
    command = mmray_command("serve", str(local_config(bundles, tmp_path)), "--port", str(free_port()))
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while "DEPLOYING" not in log.read_text():
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            raylets = descendants_named(server.pid, "raylet")
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            if server.poll() is None:
                server.kill()
    said = log.read_text()
    assert "stopping" in said and "SIGTERM received" not in said, said[-3000:]
    assert "Traceback" not in own_lines(said), own_lines(said)[-3000:]
    assert raylets and not any(Path(f"/proc/{pid}").exists() for pid in raylets), "the local Ray stopped with it"


@pytest.mark.usefixtures("ray_session")  # the command joins the session's Ray (RAY_ADDRESS), which outlives it
def test_serve_of_a_bundle_no_replica_can_load_stops_at_once_naming_it_and_deletes_its_app(
    bundles: Bundles, tmp_path: Path
) -> None:
    """A replica never retries the committed bundles it failed to load: `mmray serve` says why and exits as soon
    as /readyz reports the failure, instead of waiting out its 600 s start timeout. On a cluster, which its apps
    would outlive (an embedded local Ray stops with the command), it first deletes the apps it deployed and keeps
    the cluster's others."""
    from ray import serve

    index = shutil.copytree(bundles.index, tmp_path / "index")
    damaged = index / "images.faiss"
    damaged.write_bytes(damaged.read_bytes()[:100])
    path = local_config(bundles, tmp_path)
    config = yaml.safe_load(path.read_text())
    config["applications"][0]["args"]["index"] = str(index)
    config["applications"][0]["route_prefix"] = "/failing"  # beside the package's apps, if they run
    path.write_text(yaml.safe_dump(config))
    others = set(serve.status().applications)
    assert "mmray" not in others
    log = tmp_path / "serve.log"
    try:
        with log.open("w") as output:
            command = mmray_command("serve", str(path), "--port", str(free_port()))
            server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, text=True)
            try:
                server.wait(timeout=240)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=120)
                pytest.fail("mmray serve still waited for an app whose bundles had failed to load")
        said = log.read_text()
        errors = [line for line in said.splitlines() if line.startswith("error:")]
        assert server.returncode == 2 and len(errors) == 1, said[-3000:]
        assert errors[0].startswith("error: application 'mmray' could not load its bundles: retriever ")
        assert f"{damaged} is damaged" in errors[0]
        left = serve.status().applications
        assert "mmray" not in left, f"the failed app stayed deployed: {left['mmray'].status}\n{said[-3000:]}"
        assert others <= set(left), "the cluster's other apps are kept"
        assert "deleting the applications it deployed: mmray" in " ".join(said.split()), said[-3000:]
    finally:
        if "mmray" in serve.status().applications:
            serve.delete("mmray")


def test_a_new_api_key_is_added_to_a_keys_file_as_its_hash(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    made = invoke_mmray("api-key", "--keys-file", str(keys_file))
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("key:")[1].split()[0]
    assert key not in keys_file.read_text()
    assert KeyChecker(read_key_hashes(AuthSettings(keys_file=str(keys_file)))).allows(f"Bearer {key}")
    refused = invoke_mmray("api-key", "--keys-file", str(tmp_path))  # a directory: an IsADirectoryError traceback
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and str(tmp_path) in refused.stderr
