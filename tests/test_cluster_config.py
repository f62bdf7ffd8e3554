"""cluster.yaml against the schema the ray wheel ships, and the KubeRay manifests of docs/kuberay
against the fields KubeRay requires."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from mmray.cluster.ray_compat import left_out_of_upload
from mmray.cluster.submission import EXCLUDES, submit_job
from mmray.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_rays_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert {"/.venv", "/data", "/runs"} <= set(config["rsync_exclude"])
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311")
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers and all(t["node_config"]["InstanceType"].startswith(("g5", "p4d")) for t in workers)


def _pod_template_ok(template: dict) -> None:
    containers = template["spec"]["containers"]
    assert containers and all(c["image"].startswith("rayproject/ray:2.60.0") for c in containers)


def _cluster_spec_ok(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    _pod_template_ok(head["template"])
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        _pod_template_ok(group["template"])


def test_kuberay_rayjob_manifest_has_the_required_fields() -> None:
    manifest = yaml.safe_load((REPO_ROOT / "docs" / "kuberay" / "rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["entrypoint"].startswith("mmray train jobs/") and spec["shutdownAfterJobFinishes"] is True
    _cluster_spec_ok(spec["rayClusterSpec"])


def test_kuberay_rayservice_manifest_serves_the_mmray_app() -> None:
    manifest = yaml.safe_load((REPO_ROOT / "docs" / "kuberay" / "rayservice.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    app = serve_config["applications"][0]
    assert app["import_path"] == "mmray.serving.app:build_app" and app["args"]["models"]
    _cluster_spec_ok(manifest["spec"]["rayClusterConfig"])


def _tracked_files() -> list[str]:
    return [p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.rglob("*") if p.is_file()
            and not p.relative_to(REPO_ROOT).parts[0].startswith((".", "data", "runs"))]  # fmt: skip


def test_the_cluster_sync_leaves_out_only_the_top_level_data_and_runs(tmp_path: Path) -> None:
    """rsync_exclude patterns without a leading slash match at any depth: `data` left out mmray.data, so every
    node launched with `ray up` got an install without it."""
    excluded = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())["rsync_exclude"]
    assert {"/.venv", "/data", "/runs", "/.git"} <= set(excluded)
    if shutil.which("rsync") is None:
        return  # the patterns' anchoring is checked; rsync itself where it is installed
    copy = tmp_path / "synced"
    rsync = ["rsync", "-a", *(f"--exclude={pattern}" for pattern in excluded), "--filter=dir-merge,- .gitignore"]
    subprocess.run([*rsync, f"{REPO_ROOT}/", f"{copy}/"], check=True, timeout=120)
    assert (copy / "platform" / "mmray" / "data" / "coco.py").is_file() and (copy / "jobs").is_dir()
    assert not (copy / "data").exists() and not (copy / "runs").exists() and not (copy / ".venv").exists()


def test_a_submitted_job_uploads_the_whole_library_and_its_spec() -> None:
    uploaded = [name for name in _tracked_files() if not left_out_of_upload(EXCLUDES, name)]
    assert "platform/mmray/data/coco.py" in uploaded and "jobs/shapes-clip.yaml" in uploaded
    left_out = ("data/shapes/x.jpg", "runs/a/best_job.yaml", ".venv/bin/x", "platform/mmray/__pycache__/a.pyc")
    assert all(left_out_of_upload(EXCLUDES, name) for name in left_out)
    assert not left_out_of_upload(EXCLUDES, "jobs/data/clip.yaml")


def test_a_spec_the_upload_leaves_out_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "runs" / "search" / "best_job.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text((REPO_ROOT / "jobs" / "shapes-clip.yaml").read_text())
    with pytest.raises(ConfigError, match=r"runs/search/best_job\.yaml is left out of the upload .*copy it"):
        submit_job(spec, [], address="http://127.0.0.1:1", working_dir=tmp_path)
