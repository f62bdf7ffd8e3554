"""A two-node Ray cluster on this machine: a head (with the dashboard and Jobs API) and a worker node,
each started by `ray start` in its own session with its own temp directory and logical resources, so a
test can stop either node, and only what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_ports


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def stop_group(pgid: int, grace_s: float = 10.0, crash: bool = False) -> None:
    """SIGTERM to every process of the group `ray start` began, then SIGKILL to what is left; `crash`:
    SIGKILL at once, as when a machine dies."""
    for sig in (signal.SIGKILL,) if crash else (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass
class LocalCluster:
    root: Path
    env: dict[str, str]
    cpus: int = 1
    """Logical CPUs of each node."""
    gcs_port: int = 0
    dashboard_port: int = 0
    groups: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray_start(self, name: str, arguments: list[str]) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        (agent_port,) = free_ports(1)
        command = [ray, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                   f'--resources={{"{name}": 1}}', f"--dashboard-agent-listen-port={agent_port}",
                   f"--temp-dir={self.root / name}", "--disable-usage-stats", *arguments]  # fmt: skip
        # Every process of the node (workers and Ray Train's helper actors among them) finds its own cluster by
        # RAY_ADDRESS, not by looking for "the" local Ray, which fails where another one runs.
        env = {**self.env, "RAY_ADDRESS": f"127.0.0.1:{self.gcs_port}"}
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
        output, _ = process.communicate(timeout=120)
        self.groups[name] = process.pid
        if process.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{output[-3000:]}")

    def start_head(self) -> None:
        self.gcs_port, self.dashboard_port, client_port = free_ports(3)
        self._ray_start("head", ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                                 "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client_port}"])  # fmt: skip

        self.wait_for_dashboard()

    def wait_for_dashboard(self, timeout_s: float = 90.0) -> None:
        """Until the Jobs API answers (the dashboard starts after `ray start` returns)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard at {self.address} did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)

    def start_worker(self, name: str = "node_b") -> None:
        self._ray_start(name, [f"--address=127.0.0.1:{self.gcs_port}"])

    def stop(self, name: str, crash: bool = False) -> None:
        if name in self.groups:
            stop_group(self.groups.pop(name), crash=crash)

    def stop_all(self) -> None:
        """Every node, the head last. The GCS and the autoscaler's monitor outlive SIGTERM by 10 s or more; a
        test cluster's state is thrown away with it, so what is left after 1 s is killed."""
        for name in [n for n in self.groups if n != "head"] + ["head"]:
            stop_group(self.groups.pop(name), grace_s=1.0)

    def worker_pids_on(self, name: str) -> set[int]:
        """Pids of the Ray worker processes whose logs are in node `name`'s session."""
        logs = self.root / name / "session_latest" / "logs"
        return {int(path.stem.rsplit("-", 1)[1]) for path in logs.glob("worker-*.out")}

    def wait_for_nodes(self, count: int, timeout_s: float = 60.0) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        deadline = time.monotonic() + timeout_s
        while True:
            status = subprocess.run([ray, "status", f"--address=127.0.0.1:{self.gcs_port}"], env=self.env,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            active = status.stdout.split("Pending:")[0].count(" node_")
            if active >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{active} of {count} nodes joined:\n{status.stdout}{status.stderr}")
            time.sleep(1.0)
