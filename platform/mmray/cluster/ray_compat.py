"""Ray internals mmray reaches where Ray has no public API for what it needs, in one place: a Ray upgrade
that moves them breaks here, and tests/test_ray_compat.py has one test per use (checked against Ray
`CHECKED_RAY_VERSION`)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import ray

CHECKED_RAY_VERSION = "2.60.0"


def logs_dir() -> str | None:
    """The connected Ray node's log directory (`ray._private.worker.global_worker.node`); None before init."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    return None if node is None else str(node.get_logs_dir_path())


def local_gcs_addresses() -> set[str]:
    """The GCS addresses of every Ray instance on this machine (`ray._private.services`, from `ps`)."""
    from ray._private.services import find_gcs_addresses

    return set(find_gcs_addresses())  # type: ignore[no-untyped-call]


def left_out_of_upload(excludes: list[str], relative_path: str) -> bool:
    """Whether a working directory's file (its path relative to the directory) is left out by `excludes`, as the
    Jobs API's upload matches them (`ray._private.runtime_env.packaging`: its vendored pathspec, gitwildmatch)."""
    from ray._private.thirdparty.pathspec import PathSpec  # type: ignore[attr-defined]

    spec = PathSpec.from_lines("gitwildmatch", excludes)  # type: ignore[no-untyped-call]
    return bool(spec.match_file(relative_path))


def train_report_logger() -> logging.Logger | None:
    """The logger Ray Train V2 writes every report to: named after its file
    (`ray.train.v2._internal.execution.context`), so Ray's own logging config does not reach it."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return None
    return logging.getLogger(context.__file__)


def train_controller_waited_on(thread: threading.Thread) -> Any:
    """The Ray Train V2 controller (an actor handle) that `TorchTrainer.fit`, running in `thread`, waits on: the
    local `controller` of `DataParallelTrainer._initialize_and_run_controller`; None before it exists (tested in
    tests/train/test_fit_stops.py)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_initialize_and_run_controller":
            return frame.f_locals.get("controller")
        frame = frame.f_back
    return None


class ServeController:
    """Serve's controller client (`ray.serve._private.api.serve_start`, starting Serve where it does not run):
    the cluster's Serve details, and a deploy of a whole Serve config (`serve deploy` without the dashboard)."""

    def __init__(self, http_options: dict[str, Any], proxy_location: Any) -> None:
        from ray.serve._private import api

        self._client = api.serve_start(http_options=http_options, proxy_location=proxy_location)

    def details(self) -> dict[str, Any]:
        """`serve status -v`'s mapping: applications with their deployed configs, the HTTP options."""
        details: dict[str, Any] = self._client.get_serve_details()
        return details

    def deploy(self, schema: Any) -> None:
        """Deploy a `ServeDeploySchema` (every application of the cluster) without waiting."""
        self._client.deploy_apps(schema, _blocking=False)
