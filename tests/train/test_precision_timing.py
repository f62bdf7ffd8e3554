"""`precision: auto` on a GPU times the run's own step in each native precision and keeps the fastest: the
choice rule, a timing that leaves the model and the random generators as they were, ranks that agree on their
slowest rank's rates, and a resumed run that keeps the precision it trained in. The GPU's candidates stand in
on the CPU here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from mmray.devices import PrecisionChoice, auto_candidates, resolve_precision
from mmray.train import precision_probe
from mmray.train.local_run import run_local
from mmray.train.precision_probe import auto_precision, measure_precisions, preferred_precision
from tests.support.ports import free_port
from tests.support.precision_ranks import time_on_rank
from tests.train.test_task_loop import probe_job

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("rates", "chosen"),
    [
        ({"bf16": 24_100, "fp32": 29_265, "fp16": 24_062}, "fp32"),  # a launch-bound model (H200, shapes, 256)
        ({"bf16": 72_816, "fp32": 57_112, "fp16": 81_939}, "fp16"),  # bf16 beaten by fp16 by more than 5 %
        ({"bf16": 2_717, "fp32": 940, "fp16": 2_750}, "bf16"),  # within 5 %: the first in the order wins
        ({"bf16": 100.0, "fp32": 0.0, "fp16": 90.0}, "bf16"),  # fp32 not tried (no room)
    ],
)
def test_the_first_precision_within_5_percent_of_the_fastest_is_chosen(rates: dict, chosen: str) -> None:
    assert preferred_precision(rates, ("bf16", "fp32", "fp16")) == chosen


def test_timing_leaves_the_model_and_every_random_generator_as_they_were() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    before = torch.get_rng_state()
    steps: list[str] = []

    def step(choice: PrecisionChoice) -> None:
        steps.append(choice.precision)
        with choice.autocast():
            loss = model(torch.randn(16, 3, 8, 8)).float().pow(2).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    rates = measure_precisions(step, ("fp32", "bf16"), model, CPU)

    assert set(rates) == {"fp32", "bf16"} and all(rate > 0 for rate in rates.values())
    assert steps == ["fp32"] * 4 + ["bf16"] * 4, "one untimed step, then the timed ones, per precision"
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), f"{name} changed (batch-norm statistics must be restored)"
    assert torch.equal(torch.get_rng_state(), before), "dropout's draws were given back"


def test_a_precision_that_runs_out_of_memory_in_one_process_is_not_chosen() -> None:
    model = nn.Linear(4, 2)

    def step(choice: PrecisionChoice) -> None:
        model(torch.ones(3, 4)).sum().backward()
        if choice.precision == "fp32":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        model.zero_grad(set_to_none=True)

    rates = measure_precisions(step, ("bf16", "fp32"), model, CPU)
    assert rates["fp32"] == 0.0 and rates["bf16"] > 0
    assert preferred_precision(rates, ("bf16", "fp32")) == "bf16"
    assert all(p.grad is None for p in model.parameters()), "the failed step's gradients are cleared"


def test_two_ranks_choose_alike_by_their_slowest_rank(tmp_path: Path) -> None:
    mp.spawn(time_on_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1], "both ranks hold the slowest rank's rates and the same choice"
    rates = ranks[0]["rates"]
    assert rates["bf16"] < 1 / 0.03 and rates["fp32"] < 1 / 0.01, "each precision at its slowest rank's rate"
    assert ranks[0]["choice"] == "fp32", "a step waits for the slowest rank: bf16's 30 ms there beats fp32's 10 ms"


def test_auto_keeps_what_a_resumed_run_trained_in_and_times_only_a_choice() -> None:
    native = resolve_precision("auto", CPU)
    assert auto_candidates(CPU) == (native.precision,), "a CPU has one candidate: its native precision"
    assert auto_precision(native, None) == (native, ()), "one candidate: nothing to time"
    explicit = resolve_precision("fp32", CPU)
    assert auto_precision(explicit, "bf16") == (explicit, ()), "an explicit precision is never changed"


@pytest.mark.slow
def test_a_run_times_its_first_batch_and_its_resumption_keeps_the_choice(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(precision_probe, "auto_candidates", lambda device: ("bf16", "fp32"))
    spec = probe_job(data_root, tmp_path / "runs", "timed", epochs=2, eval_every=1)
    with caplog.at_level(logging.INFO, logger="mmray.train"):
        first = run_local(spec, stop_after_epoch=1)
    chosen = first.history[0]["precision"]
    assert "auto: bf16 / fp32 timed at the first step" in caplog.text
    assert f"precision auto: {chosen}, timed on the first batch (bf16 " in caplog.text
    untimed = spec.model_copy(update={"name": "untimed", "train": spec.train.model_copy(update={"precision": chosen})})
    plain = run_local(untimed, stop_after_epoch=1)
    assert plain.history[0]["train_loss"] == first.history[0]["train_loss"], "the timing steps left no trace"

    def no_second_timing(*args: object) -> None:
        raise AssertionError("a resumed run keeps the precision it trained in")

    monkeypatch.setattr(precision_probe, "measure_precisions", no_second_timing)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmray.train"):
        resumed = run_local(spec)
    assert [h["precision"] for h in resumed.history] == [chosen, chosen]
    assert f"(cpu, {chosen} auto-chosen)" in caplog.text
