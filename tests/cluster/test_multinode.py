"""mmray on a real two-node Ray cluster on this machine: jobs submitted through the Jobs API with
`mmray submit`, two training workers spread one per node, checkpoints on the S3 server; a failing job
whose error, logs and exit code reach the user; `mmray jobs`; a crashed node replaced mid-run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray import storage
from mmray.artifacts.model_bundle import open_bundle
from tests.support.local_cluster import LocalCluster
from tests.support.seaweedfs import SeaweedServer
from tests.train.conftest import last_json, mmray_command, tiny_job

pytestmark = pytest.mark.slow
# The pids in rank 0's placement line: "[mmray] 2 workers (cpu, fp32 auto-chosen) on 2 nodes: … rank 0 (pid 811); …".
PLACED_PIDS = re.compile(r"\(pids? ([\d, ]+)\)")


def training_worker_pids(output: str) -> set[int]:
    return {int(pid) for group in PLACED_PIDS.findall(output) for pid in group.split(", ")}


@pytest.fixture(scope="module")
def cluster(seaweedfs: SeaweedServer, no_in_process_ray: None) -> Iterator[LocalCluster]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "disabled",
        **seaweedfs.client_env,
    }
    env.pop("RAY_ADDRESS", None)
    root = Path(tempfile.mkdtemp(prefix="mmray-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    local = LocalCluster(root, env)
    try:
        local.start_head()
        local.start_worker("node_b")
        local.wait_for_nodes(2)
        yield local
    finally:
        local.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bucket(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, cluster.env[name])
    uri = f"s3://mmray-cluster-{uuid.uuid4().hex[:10]}"
    storage.ensure_bucket(uri)
    return uri


def _job(workdir: Path, data_root: Path, storage_root: str, name: str, **train: Any) -> Path:
    """The training tests' tiny job, its two workers spread one per node."""
    spec = tiny_job(data_root, storage_root, name, **{"epochs": 1, "placement_strategy": "SPREAD", **train})
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _mmray(cluster: LocalCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mmray_command(*args), env=cluster.env, capture_output=True, text=True, timeout=timeout)


def test_submitted_training_spreads_over_both_nodes_and_checkpoints_to_s3(
    cluster: LocalCluster, bucket: str, tmp_path: Path
) -> None:
    job = _job(tmp_path / "work", tmp_path / "data", f"{bucket}/runs", "spread")
    result = _mmray(cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(job.parent))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = last_json(result.stdout)
    assert final["status"] == "SUCCEEDED" and final["submission_id"].startswith("mmray-train-spread-")
    assert "storage_root" not in result.stderr, "an s3:// storage root draws no warning"
    trained = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"run_dir"')]
    assert trained and trained[-1]["epoch"] == 1

    workers = training_worker_pids(result.stdout)
    assert len(workers) == 2, result.stdout[-3000:]
    on_head, on_b = workers & cluster.worker_pids_on("head"), workers & cluster.worker_pids_on("node_b")
    assert len(on_head) == 1 and len(on_b) == 1, "SPREAD placed one training worker on each node"

    bundle_uri = trained[-1]["model_bundle"]
    assert bundle_uri.startswith(f"{bucket}/runs/spread/checkpoint_epoch_0001")
    assert open_bundle(bundle_uri).version == trained[-1]["model_version"], "the checkpoint reads back from S3"

    listed = _mmray(cluster, "jobs", "list", "--address", cluster.address)
    assert final["submission_id"] in listed.stdout and "SUCCEEDED" in listed.stdout


def test_a_failing_job_reports_its_error_logs_and_exit_code(cluster: LocalCluster, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    job = _job(workdir, tmp_path / "data", str(tmp_path / "runs"), "broken")
    spec = yaml.safe_load(job.read_text())
    missing = tmp_path / "nowhere" / "captions_train.json"
    spec["data"] = {"source": "coco", "train": {"captions": str(missing), "images": str(tmp_path / "nowhere")}}
    job.write_text(yaml.safe_dump(spec))
    result = _mmray(cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(workdir))
    assert result.returncode == 1, result.stdout[-3000:]
    assert str(missing) in result.stdout, "the job's error reaches the submitting user"
    assert "storage_root" in result.stderr and "s3://" in result.stderr, "a local storage root is warned about"
    submission = last_json(result.stdout)["submission_id"]
    status = _mmray(cluster, "jobs", "status", submission, "--address", cluster.address)
    assert status.returncode == 1 and json.loads(status.stdout)["status"] == "FAILED"
    logs = _mmray(cluster, "jobs", "logs", submission, "--address", cluster.address)
    assert logs.returncode == 0 and str(missing) in logs.stdout

    bad = _mmray(cluster, "submit", str(job), "train.epochs=0", "--address", cluster.address,
                 "--working-dir", str(workdir))  # fmt: skip
    assert bad.returncode == 2 and "epochs" in bad.stderr, "a bad spec is refused before anything is submitted"
    outside = _mmray(cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(tmp_path / "x"))
    assert outside.returncode == 2 and "outside the working directory" in outside.stderr
    unreachable = _mmray(cluster, "jobs", "list", "--address", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr


def test_a_crashed_node_is_replaced_and_the_run_resumes(cluster: LocalCluster, bucket: str, tmp_path: Path) -> None:
    job = _job(tmp_path / "work", tmp_path / "data", f"{bucket}/runs", "recover", epochs=4, eval_every=2,
               max_failures=3)  # fmt: skip
    submitted = _mmray(cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(job.parent),
                       "--no-wait")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    submission = last_json(submitted.stdout)["submission_id"]
    first_checkpoint = f"{bucket}/runs/recover/checkpoint_epoch_0001/bundle.json"
    deadline = time.monotonic() + 300
    while not storage.exists(first_checkpoint):
        assert time.monotonic() < deadline, "no first checkpoint within 5 minutes"
        time.sleep(0.5)
    cluster.stop("node_b", crash=True)  # its training worker dies with it
    running = _mmray(cluster, "jobs", "status", submission, "--address", cluster.address)
    assert json.loads(running.stdout)["status"] == "RUNNING", "the node went down while the run was training"
    assert not storage.exists(f"{bucket}/runs/recover/checkpoint_epoch_0004/bundle.json")
    time.sleep(3.0)
    cluster.start_worker("node_c")  # two SPREAD workers need two nodes again
    followed = _mmray(cluster, "jobs", "logs", submission, "--follow", "--address", cluster.address)
    status = _mmray(cluster, "jobs", "status", submission, "--address", cluster.address)
    assert json.loads(status.stdout)["status"] == "SUCCEEDED", followed.stdout[-4000:]
    workers = training_worker_pids(followed.stdout)
    assert workers & cluster.worker_pids_on("node_c"), "a replacement worker ran on the new node"
    assert "resumed from" in followed.stdout
    history = json.loads(storage.read_text(f"{bucket}/runs/recover/checkpoint_epoch_0004/history.json"))
    assert [entry["epoch"] for entry in history] == list(range(1, 5))
