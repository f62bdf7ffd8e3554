"""mmray.cluster.ray_compat's use of Serve's controller client on the running Serve (its deploy is the `served`
fixture's, through `start_serving`)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from mmray.cluster.ray_compat import ServeController
from mmray.serving.app import IMPORT_PATH
from tests.serving.conftest import ServedApps

pytestmark = pytest.mark.slow


def test_the_controller_details_name_the_deployed_apps_and_the_proxy_port(served: ServedApps) -> None:
    port = urlparse(served.open_url).port
    details = ServeController({"host": "127.0.0.1", "port": port}, "HeadOnly").details()
    applications = details["applications"]
    assert {"open", "locked"} <= set(applications)
    assert applications["open"]["deployed_app_config"]["import_path"] == IMPORT_PATH
    assert int(details["http_options"]["port"]) == port
