"""Connecting to Ray: an existing cluster when RAY_ADDRESS is set, else an embedded local one."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

import ray

from mmray.cluster.ray_compat import local_gcs_addresses, logs_dir
from mmray.errors import ConfigError, Terminated

logger = logging.getLogger(__name__)
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
"""Read by Ray when it starts a local node: the port of its GCS (the cluster's address)."""
VERBOSE_ENV = "MMRAY_VERBOSE"
"""Set (by `mmray -v`) to show Ray's own INFO logs (Ray Train's reports, checkpoints, worker groups)."""
EMBEDDED_TRAIN_SETTINGS = {
    # Ray Train's watcher of nodes being drained (spot reclaims): nothing to watch on one embedded node,
    # and its actor's start logs a core-worker ERROR line on every run.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # How often a run's controller polls its workers (Ray's default 2 s): a finished run was noticed
    # only 2-5 s after its last epoch, a large share of a short run or tune trial.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
"""Ray Train settings for an embedded local Ray, each kept where the user set it; clusters keep Ray's.
Set before Ray starts, so every Ray process (a tune trial's driver too) and every Train controller,
to which Ray Train passes them on, sees them."""


def use_embedded_train_settings() -> None:
    """Apply `EMBEDDED_TRAIN_SETTINGS` to this process's environment, keeping the user's own values."""
    for name, value in EMBEDDED_TRAIN_SETTINGS.items():
        os.environ.setdefault(name, value)


def ray_log_level() -> str:
    """The level of Ray Train's own logs on the console: WARNING unless verbose."""
    return "INFO" if os.environ.get(VERBOSE_ENV) else "WARNING"


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _raise_terminated(*_: Any) -> None:
    raise Terminated


def connect(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; local runs bind to 127.0.0.1 and use every core by default.
    SIGTERM then stops the process's work as Ctrl-C does."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to the Ray cluster at %s", address)
    else:
        use_embedded_train_settings()
        chosen_by_user = GCS_PORT_ENV in os.environ
        port = os.environ.setdefault(GCS_PORT_ENV, str(_free_port()))
        try:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                _node_ip_address="127.0.0.1",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                # Ray's own helpers (Ray Train's placement-group cleaner) look their cluster up by address and
                # refuse to choose when another Ray runs on the machine; tell every process which one is theirs.
                runtime_env={"env_vars": {"RAY_ADDRESS": f"127.0.0.1:{port}"}},
            )
        finally:
            if not chosen_by_user:
                os.environ.pop(GCS_PORT_ENV, None)
        logs = logs_dir()
        if logs is not None:
            logger.info("Ray's logs (every process, at every level): %s", logs)
    # SIGTERM raises `Terminated` in the main thread, replacing the handler Ray's core worker installs at
    # `ray.init`, which dumps a stack and aborts without the command's own clean-up.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def disconnect() -> None:
    """Shut this process's Ray down (an embedded local Ray stops), so no late log line of Ray's follows a
    command's final output; the lines Ray still holds (its folded repeats) go to stderr, not stdout."""
    if ray.is_initialized():
        with contextlib.redirect_stdout(sys.stderr):
            ray.shutdown()


def cluster_cpus() -> float:
    """The CPUs of the connected cluster, all nodes together."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return resources.get("CPU", 0.0)


def check_worker_resources(workers: int, cpus_per_worker: float, use_gpu: bool, what: str) -> None:
    """Refuse at once what the connected cluster can never give; on a cluster (RAY_ADDRESS), which
    may add nodes, say what the run waits for instead."""
    available: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    needs = {"CPU": workers * cpus_per_worker, **({"GPU": float(workers)} if use_gpu else {})}
    short = {
        name: (amount, available.get(name, 0.0)) for name, amount in needs.items() if available.get(name, 0.0) < amount
    }
    if not short:
        return
    shown = ", ".join(f"{amount:g} {name} (the cluster has {have:g})" for name, (amount, have) in short.items())
    if os.environ.get("RAY_ADDRESS"):
        logger.warning("%s needs %s; it waits until the cluster adds them (an autoscaling cluster can)", what, shown)
        return
    hint = "set train.use_gpu=false, or run on a cluster with GPUs" if "GPU" in short else "use fewer workers or CPUs"
    raise ConfigError(f"{what} needs {shown}, which this local Ray can never provide; {hint}")


def check_local_gpus(workers: int, use_gpu: bool, what: str) -> None:
    """Before an embedded local Ray starts: refuse GPU workers this machine lacks (the GPUs PyTorch can use,
    which is what a worker trains on). A cluster (RAY_ADDRESS) is asked once connected instead."""
    if not use_gpu or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < workers:
        raise ConfigError(
            f"{what} needs {workers} GPU (this machine has {have} that PyTorch can use), which a local Ray can "
            "never provide; set train.use_gpu=false, or run on a cluster with GPUs"
        )


def warn_if_other_local_ray(what: str) -> None:
    """With an embedded Ray, a second Ray instance on the same machine confuses Ray Train's cleanup
    of stopped runs (its state API finds two clusters), so resources of stopped trials stay reserved."""
    if os.environ.get("RAY_ADDRESS"):
        return
    others = len(local_gcs_addresses()) - 1
    if others > 0:
        logger.warning("%d other Ray instance(s) run on this machine; %s may wait forever for the resources "
                       "of stopped trials: stop them, or start one cluster (`ray start --head`) and set "
                       "RAY_ADDRESS", others, what)  # fmt: skip
