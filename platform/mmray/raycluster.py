"""Connecting to Ray: an existing cluster when RAY_ADDRESS is set, else an embedded local one."""

from __future__ import annotations

import logging
import os

import ray

logger = logging.getLogger(__name__)


def connect(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; local runs bind to 127.0.0.1 and use every core by default."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        logger.info("connected to the Ray cluster at %s", address)
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
    )
