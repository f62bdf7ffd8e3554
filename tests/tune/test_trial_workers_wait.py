"""A trial's Train run waits for workers that sibling trials still hold instead of failing after Ray
Train's 60 s default (seen under population-based training on 2 cores as a logged
WorkerGroupStartupTimeoutError)."""

from __future__ import annotations

import pytest
from ray.train.v2._internal.constants import get_env_vars_to_propagate

from mmray.tune.trial import TRIAL_WORKER_START_TIMEOUT_S, WORKER_START_TIMEOUT_ENV, wait_for_sibling_trials_resources


def test_a_trial_gives_its_train_controller_a_long_worker_start_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_START_TIMEOUT_ENV, "unset")  # recorded, so what the trial sets is undone after
    monkeypatch.delenv(WORKER_START_TIMEOUT_ENV)
    assert WORKER_START_TIMEOUT_ENV not in get_env_vars_to_propagate()
    wait_for_sibling_trials_resources()
    assert get_env_vars_to_propagate()[WORKER_START_TIMEOUT_ENV] == str(TRIAL_WORKER_START_TIMEOUT_S)


def test_a_timeout_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_START_TIMEOUT_ENV, "120")
    wait_for_sibling_trials_resources()
    assert get_env_vars_to_propagate()[WORKER_START_TIMEOUT_ENV] == "120"
