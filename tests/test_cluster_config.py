"""cluster.yaml against the schema the ray wheel ships, and the KubeRay manifests of docs/kuberay
against the fields KubeRay requires."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_rays_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert {".venv", "data", "runs"} <= set(config["rsync_exclude"])
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
