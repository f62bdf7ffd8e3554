"""Each Ray internal of mmray.cluster.ray_compat still does what mmray uses it for, on the installed Ray."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import ray

from mmray.cluster import ray_compat
from mmray.cluster.ray_compat import left_out_of_upload
from mmray.cluster.submission import EXCLUDES


def test_the_installed_ray_is_the_checked_one() -> None:
    checked = ray_compat.CHECKED_RAY_VERSION.split(".")[:2]
    assert ray.__version__.split(".")[:2] == checked, f"Ray {ray.__version__}: check mmray/ray_compat.py's uses"


def test_the_train_report_logger_is_the_one_ray_train_reports_with() -> None:
    from ray.train.v2._internal.execution import context

    logger = ray_compat.train_report_logger()
    assert logger is not None and logger is context.logger
    assert isinstance(logger, logging.Logger)


@pytest.mark.slow
def test_the_logs_dir_is_the_connected_nodes(ray_session: None) -> None:
    logs = ray_compat.logs_dir()
    assert logs is not None and os.path.isdir(logs) and any(os.scandir(logs))


@pytest.mark.slow
def test_local_gcs_addresses_include_the_connected_ray(ray_cluster: str, ray_session: None) -> None:
    port = ray_cluster.rsplit(":", 1)[1]  # the GCS names the node's own address, not 127.0.0.1
    assert port in {address.rsplit(":", 1)[1] for address in ray_compat.local_gcs_addresses()}


def test_upload_excludes_match_as_the_jobs_api_matches_them(tmp_path: Path) -> None:
    """The Jobs API's own upload (ray._private.runtime_env.packaging) leaves out what `left_out_of_upload` says."""
    from ray._private.runtime_env.packaging import _get_excludes

    for name in ("platform/mmray/data/coco.py", "data/shapes/a.jpg", "jobs/data/clip.yaml", "runs/x/best_job.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
        assert _get_excludes(tmp_path, EXCLUDES)(tmp_path / name) == left_out_of_upload(EXCLUDES, name), name
