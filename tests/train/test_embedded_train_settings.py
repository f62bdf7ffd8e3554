"""An embedded local Ray gives Ray Train settings for one node (no preemption watcher, quicker polls of
the workers), under the names Ray Train reads and passes on to its controllers; values the user set win."""

from __future__ import annotations

import pytest
from ray.train.v2._internal import constants

from mmray.cluster.connection import EMBEDDED_TRAIN_SETTINGS, use_embedded_train_settings


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in EMBEDDED_TRAIN_SETTINGS:
        monkeypatch.setenv(name, "unset")  # recorded, so what the test sets is undone after
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_settings_are_ones_ray_train_reads_and_passes_to_its_controller(unset: pytest.MonkeyPatch) -> None:
    assert constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR in EMBEDDED_TRAIN_SETTINGS
    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR in EMBEDDED_TRAIN_SETTINGS
    assert not set(EMBEDDED_TRAIN_SETTINGS) & set(constants.get_env_vars_to_propagate())
    use_embedded_train_settings()
    assert {name: constants.get_env_vars_to_propagate()[name] for name in EMBEDDED_TRAIN_SETTINGS} == (
        EMBEDDED_TRAIN_SETTINGS
    )


def test_a_value_the_user_set_is_kept(unset: pytest.MonkeyPatch) -> None:
    unset.setenv(constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR, "5")
    use_embedded_train_settings()
    assert constants.get_env_vars_to_propagate()[constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR] == "5"
