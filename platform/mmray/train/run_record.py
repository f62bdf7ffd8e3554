"""A training run's record of the job it was started with (`job.yaml` in its run directory), so that
re-running a name under other settings is caught before Ray Train silently resumes the old run."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from mmray import storage
from mmray.config import TrainJob, to_yaml
from mmray.config.model import LEGACY_ORIENTATION
from mmray.errors import BundleError, ConfigError, json_object, reading

logger = logging.getLogger(__name__)

JOB_RECORD = "job.yaml"
METRICS = "metrics.json"
"""A finished run's final summary (the last line `mmray train` prints) and `history`, every epoch's metrics."""
TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"
LOCAL_LEDGER = "local_checkpoints.json"
"""A local (`--local`) run's registered checkpoints, oldest first: [{name, metrics: {epoch, checkpoint_score}}]."""
# Keys a run can be resumed under: how long it trains, how often it evaluates and logs, the
# resources it runs on; the others would mix two experiments in one run.
RESUMABLE = frozenset(
    {
        "train.epochs",
        "train.eval_every",
        "train.eval_batch_size",
        "train.log_every_steps",
        "train.max_failures",
        "train.num_workers",
        "train.cpus_per_worker",
        "train.use_gpu",
        "train.placement_strategy",
        "train.threads_per_worker",
        "train.checkpoint.num_to_keep",
        "train.feature_cache",
    }
)
_CHECKPOINT = re.compile(r"/checkpoint_epoch_(\d+)/train_state\.pt$")
_REGISTERED = re.compile(r"^checkpoint_epoch_(\d+)$")

Rerun = Literal["check", "resume", "new"]
Runner = Literal["ray", "local"]


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, requested value) for every key that differs and cannot change on resume."""
    old, new = _flat(recorded), _flat(requested)
    return [
        (key, old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and key not in RESUMABLE
    ]


def _with_legacy_values(section: Any) -> Any:
    """Image tower sections recorded before `orientation` read stored pixels: that, not the new default."""
    if not isinstance(section, dict):
        return section
    filled = {key: _with_legacy_values(value) for key, value in section.items()}
    if "resize" in filled and "mean" in filled and "orientation" not in filled:
        filled["orientation"] = LEGACY_ORIENTATION
    return filled


def recorded_job(run_dir: str) -> dict[str, Any]:
    """A run's `job.yaml` with the defaults of keys this mmray has and the recording one lacked (a key added
    since is no difference), but what it did before a setting existed where the setting's default differs;
    as written when it no longer validates."""
    path = storage.join(run_dir, JOB_RECORD)
    with reading(path, BundleError):
        recorded = _with_legacy_values(yaml.safe_load(storage.read_text(path)))
        if not isinstance(recorded, dict):
            raise TypeError(f"expected a YAML mapping, got {type(recorded).__name__}")
    try:
        return dict(yaml.safe_load(to_yaml(TrainJob.model_validate(recorded))))
    except ValueError:
        return dict(recorded)


def run_directory(spec: TrainJob) -> str:
    return storage.join(spec.storage_root, spec.name)


def read_local_ledger(run_dir: str) -> list[dict[str, Any]]:
    path = storage.join(run_dir, LOCAL_LEDGER)
    if not storage.exists(path):
        return []
    with reading(path, BundleError):
        ledger = list(json.loads(storage.read_text(path)))
        for entry in ledger:  # each names its checkpoint and the epoch it holds
            entry["name"] = str(entry["name"])
            entry["metrics"]["epoch"] = int(entry["metrics"]["epoch"])
    return ledger


def _check_runner(run_dir: str, name: str, runner: Runner) -> None:
    """A run resumes under the runner that checkpointed it: each registers checkpoints its own way."""
    other = TRAIN_SNAPSHOT if runner == "local" else LOCAL_LEDGER
    if storage.exists(storage.join(run_dir, other)):
        how = "on Ray Train (without --local)" if runner == "local" else "in one process (--local)"
        resume = "without --local" if runner == "local" else "with --local"
        raise ConfigError(
            f"run {name} at {run_dir} was trained {how}; resume it {resume}, or start afresh with --force-new "
            "(or give the job another name=...)"
        )


def latest_checkpointed_epoch(run_dir: str) -> int | None:
    """The highest epoch a resume would start after: a local run's registered checkpoints, Ray Train's when
    its snapshot is there (a checkpoint still being written is not one), else the complete ones on disk."""
    snapshot = storage.join(run_dir, TRAIN_SNAPSHOT)
    ledger = read_local_ledger(run_dir)
    if ledger:
        epochs = [int(entry["metrics"]["epoch"]) for entry in ledger]
    elif storage.exists(snapshot):
        with reading(snapshot, BundleError):
            results = json_object(storage.read_text(snapshot)).get("checkpoint_results", [])
        epochs = [int(m.group(1)) for r in results if (m := _REGISTERED.search(str(r.get("checkpoint_dir_name"))))]
    else:
        epochs = [int(m.group(1)) for f in storage.list_files(run_dir) if (m := _CHECKPOINT.search(f))]
    return max(epochs) if epochs else None


def check_run_directory(spec: TrainJob, rerun: Rerun = "check", runner: Runner = "ray") -> None:
    """Before a run's checks: refuse to resume a run of the same name started with other settings
    (`check`) or by the other runner, resume it anyway (`resume`), or move it aside and start afresh
    (`new`). Nothing is written but an S3 root's bucket: `record_job` records the job once the run's checks have
    passed, so a run refused before training leaves nothing that blocks its corrected rerun."""
    _check_root(spec.storage_root)
    run_dir = run_directory(spec)
    if not any(storage.exists(storage.join(run_dir, name)) for name in (JOB_RECORD, TRAIN_SNAPSHOT, LOCAL_LEDGER)):
        return
    if rerun == "new":
        aside = f"{run_dir.rstrip('/')}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        storage.move_tree(run_dir, aside)
        logger.warning("moved the earlier run %s aside to %s; starting afresh", run_dir, aside)
        return
    _check_runner(run_dir, spec.name, runner)
    if rerun == "resume" and storage.exists(storage.join(run_dir, JOB_RECORD)):
        _check_same_model(recorded_job(run_dir), yaml.safe_load(to_yaml(spec)), run_dir)
    if rerun == "check" and storage.exists(storage.join(run_dir, JOB_RECORD)):
        changed = differences(recorded_job(run_dir), yaml.safe_load(to_yaml(spec)))
        if changed:
            shown = "; ".join(f"{key}: {old!r} → {new!r}" for key, old, new in changed[:8])
            more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
            unsaved = latest_checkpointed_epoch(run_dir) is None
            nothing = " It has no checkpoint yet, so --force-new loses no training." if unsaved else ""
            model = [key for key, _, _ in changed if key.startswith("model.")]
            resume = (
                f"set {', '.join(model[:3])} back to resume it (--resume cannot change the model)"
                if model and not unsaved
                else "--resume continues it under the new settings"
            )
            raise ConfigError(
                f"run {spec.name} exists at {run_dir} with other settings: {shown}{more}. Re-running a name "
                f"resumes its run: {resume}, --force-new moves it aside and starts afresh, or give the job another "
                f"name=...{nothing}"
            )


def _check_root(root: str) -> None:
    """An S3 root's bucket is made where missing; a local root (or its nearest existing parent) must be a directory,
    found before any data loads."""
    if storage.is_s3(root):
        storage.ensure_bucket(root)
        return
    existing = Path(root).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"storage_root {root}: {existing} is a file; name a directory for the runs")


def _check_same_model(recorded: Mapping[str, Any], requested: Mapping[str, Any], run_dir: str) -> None:
    """Resuming loads the run's checkpoints into the job's model: it must be the one they hold."""
    changed = differences({"model": recorded.get("model")}, {"model": requested.get("model")})
    if changed and latest_checkpointed_epoch(run_dir) is not None:
        shown = "; ".join(f"{key}: {old!r} → {new!r}" for key, old, new in changed[:8])
        raise ConfigError(
            f"--resume cannot change the model ({shown}): the checkpoints in {run_dir} hold the recorded one. "
            "--force-new moves the run aside and starts afresh, or give the job another name=... (init_from=<its "
            "checkpoint> starts the new model from the weights that fit)"
        )


def finished_summary(spec: TrainJob) -> dict[str, Any] | None:
    """The final summary of this job's run (its `metrics.json` without the history) when the run has trained
    `train.epochs` and written its outputs under settings a rerun would resume (resumable keys apart), so a
    rerun has nothing to do; None otherwise. Reads a few small files: no data, model or Ray."""
    run_dir = run_directory(spec)
    metrics, record = storage.join(run_dir, METRICS), storage.join(run_dir, JOB_RECORD)
    if not (storage.exists(metrics) and storage.exists(record)):
        return None
    if differences(recorded_job(run_dir), yaml.safe_load(to_yaml(spec))):
        return None
    with reading(metrics, BundleError):
        summary = json_object(storage.read_text(metrics))
    epoch = latest_checkpointed_epoch(run_dir)
    if "history" not in summary or epoch is None or summary.get("epoch") != epoch or epoch < spec.train.epochs:
        return None  # no history: written by an older mmray, without the summary's bundles
    del summary["history"]
    return summary


def record_job(spec: TrainJob) -> None:
    """Write the job a run starts (or resumes) with as its `job.yaml`."""
    storage.write_text(storage.join(run_directory(spec), JOB_RECORD), to_yaml(spec))
