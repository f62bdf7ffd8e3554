"""An app whose route prefix another app on the cluster serves is refused before anything is deployed: Serve's
controller would store the clashing config and then refuse every later deploy on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml

from mmray.errors import ConfigError
from mmray.serving.runner import check_serve_config, start_serving
from tests.serving.conftest import Bundles, ServedApps
from tests.serving.test_serve_cli import local_config

pytestmark = pytest.mark.slow


def test_an_app_on_a_route_another_app_serves_is_refused_and_the_cluster_keeps_serving(
    served: ServedApps, bundles: Bundles, tmp_path: Path
) -> None:
    from ray import serve

    config = yaml.safe_load(local_config(bundles, tmp_path).read_text())
    config["applications"][0]["name"] = "clash"  # route_prefix "/", which the test app "open" serves
    with pytest.raises(ConfigError, match=r"route_prefix '/' is served by the cluster's application 'open'"):
        start_serving(check_serve_config(config, "clash.yaml"), timeout_s=30)
    assert "clash" not in serve.status().applications
    assert requests.get(served.open_url + "/healthz", timeout=30).json()["ready"] is True
