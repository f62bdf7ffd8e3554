"""Training state: loaded without unpickling code, RNG states restored, optimizer moments checked against
their parameters' device; a local run and a Ray run of one name do not mix."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmray.config import TrainJob
from mmray.errors import BundleError, ConfigError
from mmray.train.loop import optimizer_for
from mmray.train.run_record import LOCAL_LEDGER, TRAIN_SNAPSHOT, finished_summary, record_job
from mmray.train.schedule import warmup_cosine
from mmray.train.state import (
    HISTORY,
    TRAIN_STATE,
    Progress,
    load_train_state,
    optimizer_state_off_device,
    save_train_state,
    trained_precision,
)
from tests.train.conftest import prepare_run, tiny_job


def _optimizer_after_a_step() -> tuple[dict[str, torch.optim.Optimizer], dict, torch.amp.GradScaler]:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = optimizer_for([weight], 1e-2, 0.1)
    weight.sum().backward()
    optimizer.step()
    schedulers = {"model": warmup_cosine(optimizer, 10, 2, 0.0)}
    return {"model": optimizer}, schedulers, torch.amp.GradScaler("cpu", enabled=False)


def test_state_round_trips_with_every_rng(tmp_path: Path) -> None:
    optimizers, schedulers, scaler = _optimizer_after_a_step()
    progress = Progress(epochs_done=3, global_step=30, history=[{"epoch": 3, "precision": "fp32", "loss": 0.5}])
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_train_state(tmp_path, progress, optimizers, schedulers, scaler)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restored = load_train_state(tmp_path, *_optimizer_after_a_step())
    assert restored == progress
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


class _Payload:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path("/tmp/mmray-unpickled-code-ran"),))


def test_a_checkpoint_carrying_code_is_refused_not_run(tmp_path: Path) -> None:
    marker = Path("/tmp/mmray-unpickled-code-ran")
    marker.unlink(missing_ok=True)
    optimizers, schedulers, scaler = _optimizer_after_a_step()
    save_train_state(tmp_path, Progress(), optimizers, schedulers, scaler)
    state = torch.load(tmp_path / TRAIN_STATE, weights_only=True)
    state["progress"]["history"] = [_Payload()]
    torch.save(state, tmp_path / TRAIN_STATE)
    with pytest.raises(BundleError, match=rf"{TRAIN_STATE} is damaged.*carrying code"):
        load_train_state(tmp_path, optimizers, schedulers, scaler)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "no optimizers"])
def test_a_damaged_train_state_is_named(tmp_path: Path, damage: str) -> None:
    optimizers, schedulers, scaler = _optimizer_after_a_step()
    save_train_state(tmp_path, Progress(), optimizers, schedulers, scaler)
    path = tmp_path / TRAIN_STATE
    whole = path.read_bytes()
    damaged = {"truncated": whole[: len(whole) // 2], "empty": b"", "garbage": np.random.default_rng(0).bytes(3000)}
    if damage == "no optimizers":
        torch.save({"progress": {}}, path)
    else:
        path.write_bytes(damaged[damage])
    with pytest.raises(BundleError, match=rf"{path} is damaged or not what mmray wrote"):
        load_train_state(tmp_path, optimizers, schedulers, scaler)


def test_moments_on_another_device_than_their_parameter_are_found() -> None:
    optimizers, _, _ = _optimizer_after_a_step()
    assert optimizer_state_off_device(optimizers) == []
    (moments,) = optimizers["model"].state.values()
    for key in ("exp_avg", "exp_avg_sq"):  # as restored before the model moved to its GPU
        moments[key] = moments[key].to("meta")
    found = optimizer_state_off_device(optimizers)
    assert len(found) == 2 and all("on meta for a (4, 3) parameter on cpu" in line for line in found), found


@pytest.mark.parametrize(("existing", "runner", "hint"), [(LOCAL_LEDGER, "ray", "with --local"),
                                                          (TRAIN_SNAPSHOT, "local", "without --local")])  # fmt: skip
def test_a_run_resumes_only_under_the_runner_that_checkpointed_it(
    tmp_path: Path, existing: str, runner: str, hint: str
) -> None:
    spec = TrainJob.model_validate(tiny_job(tmp_path / "data", tmp_path / "runs", "mixed"))
    run_dir = tmp_path / "runs" / "mixed"
    run_dir.mkdir(parents=True)
    (run_dir / existing).write_text("[]" if existing == LOCAL_LEDGER else "{}")
    with pytest.raises(ConfigError, match=f"resume it {hint}, or start afresh with --force-new"):
        prepare_run(spec, "check", runner=runner)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        prepare_run(spec, "resume", runner=runner)  # type: ignore[arg-type]
    prepare_run(spec, "new", runner=runner)  # type: ignore[arg-type]
    assert not (run_dir / existing).exists() and (run_dir / "job.yaml").is_file()


RUN_FILE_DAMAGE = [
    ("job.yaml", "kind: [unclosed"),
    ("job.yaml", "- 1"),
    ("job.yaml", ""),
    (LOCAL_LEDGER, "{"),
    (LOCAL_LEDGER, '[{"name": 5}]'),
    (LOCAL_LEDGER, '["checkpoint_epoch_0001"]'),
    ("metrics.json", "{"),
    ("metrics.json", "[1]"),
]


@pytest.mark.parametrize(("name", "content"), RUN_FILE_DAMAGE)
def test_a_damaged_run_file_is_named(tmp_path: Path, name: str, content: str) -> None:
    spec = TrainJob.model_validate(tiny_job(tmp_path / "data", tmp_path / "runs", "damaged", epochs=1))
    run_dir = tmp_path / "runs" / "damaged"
    run_dir.mkdir(parents=True)
    record_job(spec)
    ledger = [{"name": "checkpoint_epoch_0001", "metrics": {"epoch": 1, "checkpoint_score": 0.5}}]
    (run_dir / LOCAL_LEDGER).write_text(json.dumps(ledger))
    (run_dir / "metrics.json").write_text(json.dumps({"epoch": 1, "history": []}))
    assert finished_summary(spec) == {"epoch": 1}
    (run_dir / name).write_text(content)
    with pytest.raises(BundleError, match=rf"{run_dir / name} is damaged or not what mmray wrote"):
        finished_summary(spec)


@pytest.mark.parametrize("content", ["{", "[1]", '{"precision": "bf16"}'])
def test_a_damaged_checkpoint_history_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / HISTORY).write_text(content)
    with pytest.raises(BundleError, match=rf"{tmp_path / HISTORY} is damaged or not what mmray wrote"):
        trained_precision(tmp_path)
