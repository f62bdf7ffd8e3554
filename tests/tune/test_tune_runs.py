"""`mmray tune` end to end on the session's Ray: one ASHA search of local trials (each trains in its Tune
process) stopping trials, stopped by SIGTERM and resumed, its results and exported best job; a search stopped
while its trial's run trained on to its last epoch, resumed; a trial on Ray Train; population-based training
on S3 (local trials)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray import storage
from mmray.artifacts.model_bundle import open_bundle
from mmray.config import TrainJob, load_job
from mmray.train.local_run import run_local
from tests.support.cli import invoke_mmray, ray_never_started
from tests.train.conftest import REPO_ROOT, last_json, mmray_command, run_mmray, tiny_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # its commands join the session's Ray


def tune_job(
    data_root: Path, storage_root: str, name: str, samples: int, epochs: int = 3, concurrent: int = 2
) -> dict[str, Any]:
    base = tiny_job(data_root, "unused", "base")
    return {
        "kind": "tune",
        "name": name,
        "storage_root": storage_root,
        "base": base,
        "overrides": {"train.epochs": epochs},
        "space": {
            "train.lr": "loguniform(1e-4, 1e-2)",
            "task.loss.kind": "choice([infonce, triplet])",
            "task.loss.margin": "uniform(0.1, 0.5)",
        },
        "tune": {"num_samples": samples, "max_concurrent_trials": concurrent, "trial": {"num_workers": 1}},
    }


def write(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def _finished(stderr: str) -> list[str]:
    return [line.split()[2] for line in stderr.splitlines() if line.startswith("INFO") and " finished (" in line]


def _saved_as_finished(experiment: Path) -> list[str]:
    """Trials that Tune's saved experiment state records as finished."""
    finished = []
    for state in experiment.glob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (ValueError, KeyError):
            continue
        finished += [json.loads(t[0])["trial_id"] for t in trials if json.loads(t[0]).get("status") == "TERMINATED"]
    return finished


def _result_lines(experiment: Path, trial: str) -> int:
    (directory,) = [d for d in experiment.iterdir() if d.is_dir() and f"_{trial}_" in d.name]
    result = directory / "result.json"
    return len(result.read_text().splitlines()) if result.exists() else 0


def _reported_epochs(experiment: Path, trial: str) -> list[int]:
    """The epochs of the trial's results in Tune's result.json, in order."""
    (directory,) = [d for d in experiment.iterdir() if d.is_dir() and f"_{trial}_" in d.name]
    return [json.loads(line)["epoch"] for line in (directory / "result.json").read_text().splitlines()]


def _search_stopped_once(job: Path, log: Path, ready: Callable[[str], object], missing: str) -> None:
    """`mmray tune JOB` in a process of its own, its log in `log`, stopped with SIGTERM (Tune's graceful stop,
    as Ctrl-C) as soon as `ready(log)` holds."""
    with log.open("w") as stderr:
        driver = subprocess.Popen(mmray_command("tune", str(job)), cwd=REPO_ROOT, env=os.environ.copy(),
                                  stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while not ready(log.read_text()):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{missing} within 600 s"
            time.sleep(0.1)
        driver.terminate()
        assert driver.wait(timeout=300) == 143, log.read_text()[-3000:]


def test_a_search_stops_trials_early_resumes_after_sigterm_and_exports_the_best(
    data_root: Path, tmp_path: Path
) -> None:
    """One ASHA search: stopped by SIGTERM as its first trial finishes, resumed without rerunning it; then
    its results, figures and best trial exported as a train job. The trials run one at a time in the grid's
    order, the last one hopeless (lr 1e-7): it reaches the first rung after the others, so ASHA stops it
    whatever the timing of the stop and resume (a resumed search starts with empty rungs)."""
    runs = tmp_path / "runs"
    spec = tune_job(data_root, str(runs), "search", samples=1, epochs=2, concurrent=1)
    spec["space"]["train.lr"] = "grid([0.004, 0.002, 1e-7])"
    spec["tune"]["trial"]["runner"] = "local"
    job = write(tmp_path / "tune.yaml", spec)
    log = tmp_path / "first.log"
    _search_stopped_once(job, log, _finished, "no trial finished")  # the next trial starting: before its epoch 1
    said = log.read_text()
    stopped = f"terminated: search search stopped, its state saved; `mmray tune {job} --resume` continues it"
    assert said.rstrip().endswith(stopped) and "Tuner.restore" not in said, said[-3000:]
    finished = _saved_as_finished(runs / "search")
    lines = {trial: _result_lines(runs / "search", trial) for trial in finished}
    assert 0 < len(finished) < 3, "the search was stopped before it ended, its finished trial saved as such"

    with ray_never_started():
        again = invoke_mmray("tune", str(job))
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    result = run_mmray("tune", str(job), "--resume", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["trials"] == 3 and summary["errors"] == 0
    for trial, count in lines.items():
        assert _result_lines(runs / "search", trial) == count, f"finished trial {trial} ran again"
        assert trial not in _finished(result.stderr)
    assert set(_finished(result.stderr)) | set(finished) >= set(_trial_ids(summary["results_csv"]))

    assert summary["stopped_early"] >= 1, result.stdout
    table = result.stdout.strip().splitlines()[:-1]
    assert table[0].split()[:4] == ["trial", "status", "epochs", "recall_mean"] and len(table) == 4
    assert any("stopped early" in line for line in table) and any("completed" in line for line in table)
    assert "Checkpoint successfully created" not in result.stderr, "Ray's INFO lines only with -v"
    assert "best so far" in said + result.stderr
    rows = storage.read_text(summary["results_csv"]).strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("trial_id,status,iterations,recall_mean")
    for figure in summary["figures"]:
        assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exported = load_job(summary["best_job"])
    assert isinstance(exported, TrainJob) and exported.name == "search-best"
    assert exported.train.lr == pytest.approx(summary["best_values"]["train.lr"])
    assert exported.task.loss.kind == summary["best_values"]["task.loss.kind"]  # type: ignore[attr-defined]
    bundle = open_bundle(summary["model_bundle"])
    assert bundle.manifest["metrics"]["recall_mean"] == pytest.approx(summary["best_objective"])
    trial_runs = [path for path in (runs / "search" / "trials").iterdir() if path.is_dir()]
    assert len(trial_runs) == 3 and all((run / "local_checkpoints.json").is_file() for run in trial_runs)
    assert not list(runs.rglob("checkpoint_manager_snapshot.json")), "no trial started a Ray Train run"


def _trial_ids(results_csv: str) -> list[str]:
    return [line.split(",")[0] for line in storage.read_text(results_csv).strip().splitlines()[1:]]


def _epoch_lines(stderr: str, epoch: int) -> list[str]:
    """The trials whose `epoch` reached Tune, from the progress lines."""
    return [line.split()[2] for line in stderr.splitlines() if line.startswith("INFO") and f" epoch {epoch}:" in line]


def _settled(run: Path, quiet_s: float = 3.0, within_s: float = 120.0) -> None:
    """Wait until nothing under a run directory has changed for `quiet_s` (its stopped trial is gone)."""
    deadline, seen, since = time.monotonic() + within_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*") if p.exists())
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run} kept changing for {within_s} s")


def test_a_resumed_trial_reports_the_epochs_its_run_finished_after_the_stop(data_root: Path, tmp_path: Path) -> None:
    """Stopped (SIGTERM) right after its trial's epoch 2 of 3 reached Tune; the trial's run finishes epoch 3
    regardless (the stopped trial's own run, or here the run resumed outside Tune), so Tune holds epoch 2 of a
    run with nothing left to train. The resumed search reports epoch 3 from the run's history: the trial
    completed, its last epoch the run's."""
    runs = tmp_path / "runs"
    spec = tune_job(data_root, str(runs), "caught-up", samples=1, epochs=3, concurrent=1)
    spec["tune"]["trial"]["runner"] = "local"
    job = write(tmp_path / "tune.yaml", spec)
    log = tmp_path / "first.log"
    _search_stopped_once(job, log, lambda said: _epoch_lines(said, 2), "no epoch 2")
    (trial,) = _epoch_lines(log.read_text(), 2)
    assert _result_lines(runs / "caught-up", trial) == 2, "Tune holds the trial's epoch 2"
    run = runs / "caught-up" / "trials" / f"trial-{trial}"
    _settled(run)
    trained = load_job(str(run / "job.yaml"))
    assert isinstance(trained, TrainJob)
    finished = run_local(trained, rerun="resume", threads=1)
    assert [entry["epoch"] for entry in finished.history] == [1, 2, 3]

    result = run_mmray("tune", str(job), "--resume", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert (summary["trials"], summary["stopped_early"], summary["errors"]) == (1, 0, 0)
    table = result.stdout.strip().splitlines()[:-1]
    row = table[1].split()
    assert row[:3] == [trial, "completed", "3"], table
    assert float(row[3]) == pytest.approx(finished.metrics["recall_mean"], abs=5e-5)
    assert summary["best_objective"] == pytest.approx(finished.metrics["recall_mean"])
    # Tune resumes from the checkpoint its saved state held at the stop: epoch 2's, or epoch 1's when the stop
    # came between Tune taking epoch 2's result and recording its checkpoint; it then takes epoch 2 again.
    reported = _reported_epochs(runs / "caught-up", trial)
    assert reported[:2] == [1, 2] and reported[2:] in ([3], [2, 3]), f"epoch 3 reached Tune once: {reported}"
    assert summary["model_bundle"].startswith(str(run / "checkpoint_epoch_"))


def test_a_trial_trains_on_ray_train_and_reports_every_epoch_to_tune(data_root: Path, tmp_path: Path) -> None:
    """`tune.trial.runner: ray` (the default): the trial's driver runs a Ray Train run whose rank 0 reports
    each evaluation to the trial, with its checkpoint."""
    runs = tmp_path / "runs"
    job = write(tmp_path / "tune.yaml", tune_job(data_root, str(runs), "on-train", samples=1, epochs=2))
    result = run_mmray("tune", str(job), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert (summary["trials"], summary["errors"]) == (1, 0)
    (trial,) = _trial_ids(summary["results_csv"])
    assert _result_lines(runs / "on-train", trial) == 2, "each epoch reached Tune"
    run = runs / "on-train" / "trials" / f"trial-{trial}"
    snapshot = (run / "checkpoint_manager_snapshot.json").read_text()
    assert "checkpoint_epoch_0002" in snapshot and not (run / "local_checkpoints.json").exists(), "Ray Train ran it"
    assert summary["model_bundle"].startswith(str(run / "checkpoint_epoch_"))
    bundle = open_bundle(summary["model_bundle"])
    assert bundle.manifest["metrics"]["recall_mean"] == pytest.approx(summary["best_objective"])


def pbt_job(data_root: Path, storage_root: str, name: str) -> dict[str, Any]:
    """Two trials in step (synch), each training in its Tune process: at epoch 1 the worse continues the
    better's checkpoint."""
    job = tune_job(data_root, storage_root, name, samples=2, epochs=2)
    job["space"] = {"train.lr": "loguniform(1e-4, 1e-2)", "train.weight_decay": "uniform(0.0, 0.2)"}
    scheduler = {"kind": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5, "synch": True}
    job["tune"] = {**job["tune"], "scheduler": scheduler}
    job["tune"]["trial"]["runner"] = "local"
    return job


def test_population_based_training_on_s3_continues_the_better_trials_checkpoint(
    data_root: Path, tmp_path: Path, s3_env: str
) -> None:
    root = storage.join(s3_env, "tuning")
    job = write(tmp_path / "tune.yaml", pbt_job(data_root, root, "pbt"))
    result = run_mmray("tune", str(job), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert (summary["trials"], summary["errors"], summary["stopped_early"]) == (2, 0, 0)
    table = result.stdout.strip().splitlines()[:-1]
    assert table[0].split()[-2:] == ["continued", "from"] and all("completed" in line for line in table[1:])
    rows = [line.split() for line in table[1:]]
    continued = [row for row in rows if row[-1] != "-"]
    assert len(continued) == 1, table
    trial, donor = continued[0][0], continued[0][-1].split("@")[0]
    assert continued[0][-1] == f"{donor}@1" and donor != trial and donor in {row[0] for row in rows}

    trials = storage.join(root, "pbt", "trials")
    run = storage.join(trials, f"trial-{trial}-from-{donor}-e1")
    config = yaml.safe_load(storage.read_text(storage.join(run, "config.yaml")))
    assert config["continue_from"] == storage.join(trials, f"trial-{donor}", "checkpoint_epoch_0001")
    assert config["train"]["checkpoint"]["num_to_keep"] is None, "a PBT trial keeps every checkpoint"
    values = {key: float(value) for key, value in zip(table[0].split()[4:6], continued[0][4:6], strict=True)}
    assert config["train"]["lr"] == pytest.approx(values["train.lr"], rel=1e-3)
    donor_history = json.loads(
        storage.read_text(storage.join(trials, f"trial-{donor}", "checkpoint_epoch_0001", "history.json"))
    )
    history = json.loads(storage.read_text(storage.join(run, "checkpoint_epoch_0002", "history.json")))
    assert [h["epoch"] for h in history] == [1, 2] and history[:1] == donor_history
    assert history[1]["step"] == 2 * history[0]["step"], "the step count carries on from the donor's"

    assert summary["results_csv"] == storage.join(root, "pbt", "results.csv")
    assert len(storage.read_text(summary["results_csv"]).strip().splitlines()) == 3
    best_run = run if summary["best_trial"] == trial else storage.join(trials, f"trial-{donor}")
    assert summary["model_bundle"].startswith(best_run + "/checkpoint_epoch_")
    bundle_metrics = json.loads(storage.read_text(storage.join(summary["model_bundle"], "bundle.json")))["metrics"]
    assert bundle_metrics["recall_mean"] == pytest.approx(summary["best_objective"])
    exported_text = storage.read_text(summary["best_job"])
    exported = yaml.safe_load(exported_text)
    assert exported["kind"] == "train" and exported["storage_root"] == root and exported.get("continue_from") is None
    assert (summary["best_trial"] == trial) == ("population-based training" in exported_text)
