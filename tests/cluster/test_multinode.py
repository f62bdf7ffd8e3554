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
from mmray.artifacts.manifests import LATEST_MODEL
from mmray.artifacts.model_bundle import open_bundle
from tests.support.cli import Outcome, invoke_mmray
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


def _mmray_here(cluster: LocalCluster, *args: str) -> Outcome:
    """A command that only talks to the Jobs API over HTTP (or is refused first), run in this process."""
    return invoke_mmray(*args, env=cluster.env)


def test_a_failing_job_reports_its_error_logs_and_exit_code(cluster: LocalCluster, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    job = _job(workdir, tmp_path / "data", str(tmp_path / "runs"), "broken")
    spec = yaml.safe_load(job.read_text())
    missing = tmp_path / "nowhere" / "captions_train.json"
    spec["data"] = {"source": "coco", "train": {"captions": str(missing), "images": str(tmp_path / "nowhere")}}
    job.write_text(yaml.safe_dump(spec))
    submitted = _mmray(cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(workdir),
                       "--no-wait")  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "storage_root" in submitted.stderr and "s3://" in submitted.stderr, "a local storage root is warned about"
    submission = last_json(submitted.stdout)["submission_id"]
    assert submission.startswith("mmray-train-broken-")
    followed = _mmray(cluster, "jobs", "logs", submission, "--follow", "--address", cluster.address)
    assert str(missing) in followed.stdout, "the job's error reaches the user following it"
    status = _mmray_here(cluster, "jobs", "status", submission, "--address", cluster.address)
    assert status.returncode == 1 and json.loads(status.stdout)["status"] == "FAILED"
    logs = _mmray_here(cluster, "jobs", "logs", submission, "--address", cluster.address)
    assert logs.returncode == 0 and str(missing) in logs.stdout

    bad = _mmray_here(cluster, "submit", str(job), "train.epochs=0", "--address", cluster.address,
                 "--working-dir", str(workdir))  # fmt: skip
    assert bad.returncode == 2 and "epochs" in bad.stderr, "a bad spec is refused before anything is submitted"
    outside = _mmray_here(
        cluster, "submit", str(job), "--address", cluster.address, "--working-dir", str(tmp_path / "x")
    )
    assert outside.returncode == 2 and "outside the working directory" in outside.stderr
    unreachable = _mmray_here(cluster, "jobs", "list", "--address", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr


def test_submitted_training_spreads_over_both_nodes_survives_a_crashed_node_and_checkpoints_to_s3(
    cluster: LocalCluster, bucket: str, tmp_path: Path
) -> None:
    """`mmray submit` (following the job to its end) of a run whose two SPREAD workers sit one per node; once
    its first checkpoint is registered, the second node crashes, a new node joins, and the run resumes to its end."""
    job = _job(tmp_path / "work", tmp_path / "data", f"{bucket}/runs", "recover", epochs=4, eval_every=2,
               max_failures=3)  # fmt: skip
    log, said = tmp_path / "submit.out", tmp_path / "submit.err"
    with log.open("w") as output, said.open("w") as errors:
        submit = subprocess.Popen(mmray_command("submit", str(job), "--address", cluster.address, "--working-dir",
                                                str(job.parent)), env=cluster.env, stdout=output, stderr=errors,
                                  text=True)  # fmt: skip
        try:
            # A checkpoint uploaded is not yet one to resume from: Ray Train registers it once every rank's report
            # has reached its controller, and a node lost before that loses the report. The latest-model pointer
            # is written after the registration.
            registered = f"{bucket}/runs/recover/{LATEST_MODEL}"
            deadline = time.monotonic() + 300
            while not storage.exists(registered):
                assert submit.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no registered checkpoint within 5 minutes"
                time.sleep(0.5)
            submission = _submission_id(said)
            so_far = _mmray_here(cluster, "jobs", "logs", submission, "--address", cluster.address).stdout
            workers = training_worker_pids(so_far)
            assert len(workers) == 2, so_far[-3000:]
            on_head, on_b = workers & cluster.worker_pids_on("head"), workers & cluster.worker_pids_on("node_b")
            assert len(on_head) == 1 and len(on_b) == 1, "SPREAD placed one training worker on each node"

            cluster.stop("node_b", crash=True)  # its training worker dies with it
            running = _mmray_here(cluster, "jobs", "status", submission, "--address", cluster.address)
            assert json.loads(running.stdout)["status"] == "RUNNING", "the node went down while the run was training"
            assert not storage.exists(f"{bucket}/runs/recover/checkpoint_epoch_0004/bundle.json")
            time.sleep(3.0)
            cluster.start_worker("node_c")  # two SPREAD workers need two nodes again
            assert submit.wait(timeout=600) == 0, log.read_text()[-4000:] + said.read_text()[-2000:]
        finally:
            if submit.poll() is None:
                submit.kill()
    followed = log.read_text()
    final = last_json(followed)
    assert final["status"] == "SUCCEEDED" and final["submission_id"] == submission
    assert "storage_root" not in said.read_text(), "an s3:// storage root draws no warning"
    assert training_worker_pids(followed) & cluster.worker_pids_on("node_c"), "a replacement worker ran on the new node"
    assert "resumed from" in followed
    trained = [json.loads(line) for line in followed.splitlines() if line.startswith('{"run_dir"')]
    assert trained and trained[-1]["epoch"] == 4
    bundle_uri = trained[-1]["model_bundle"]
    assert bundle_uri.startswith(f"{bucket}/runs/recover/checkpoint_epoch_000")
    assert open_bundle(bundle_uri).version == trained[-1]["model_version"], "the checkpoint reads back from S3"
    history = json.loads(storage.read_text(f"{bucket}/runs/recover/checkpoint_epoch_0004/history.json"))
    assert [entry["epoch"] for entry in history] == list(range(1, 5))

    listed = _mmray_here(cluster, "jobs", "list", "--address", cluster.address)
    assert submission in listed.stdout and "SUCCEEDED" in listed.stdout


def _submission_id(stderr: Path) -> str:
    """The id `mmray submit` says first (`submitted mmray-train-…`), read from its stderr so far."""
    found = re.search(r"submitted (mmray-train-[\w-]+)", stderr.read_text())
    assert found, stderr.read_text()[-3000:]
    return found.group(1)
