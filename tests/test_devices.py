"""Precision chosen by the device: `auto` resolves per device, an emulated bf16 is named with its cost,
fp16 stays on GPUs; the shipped jobs and the config default to `auto`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from mmray.config import TrainJob, load_job
from mmray.config.training import TrainSettings
from mmray.devices import cpu_has_native_bf16, pick_device, resolve_precision
from mmray.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_auto_on_a_cpu_is_bf16_only_where_it_is_native() -> None:
    choice = resolve_precision("auto", CPU)
    assert choice.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choice.autocast_dtype == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert not choice.needs_grad_scaler
    with choice.autocast():
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)


def test_explicit_bf16_runs_and_names_its_cost_where_it_is_emulated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmray.devices"):
        choice = resolve_precision("bf16", CPU)
    assert choice.precision == "bf16" and choice.autocast_dtype == torch.bfloat16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if cpu_has_native_bf16():
        assert not warnings
    else:
        assert len(warnings) == 1 and "slower than fp32" in warnings[0] and "auto picks fp32" in warnings[0]


def test_fp16_is_refused_off_the_gpu() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="fp16 needs use_gpu"):
        TrainSettings(precision="fp16")


def test_devices_are_checked() -> None:
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no GPU"):
            pick_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        pick_device("tpu9")


def test_a_gpu_device_names_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.set_device refuses a bare `cuda`, which `--local` and the GPU check passed to the loop."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert pick_device("auto") == torch.device("cuda", 3)
    assert pick_device("cuda") == torch.device("cuda", 3)
    assert pick_device("cuda:1") == torch.device("cuda", 1)


def test_auto_is_the_default_and_every_shipped_job_uses_it() -> None:
    assert TrainSettings().precision == "auto"
    for path in sorted((REPO_ROOT / "jobs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if raw["kind"] != "train":
            continue
        spec = load_job(path, [])
        assert isinstance(spec, TrainJob) and spec.train.precision == "auto", path.name
