"""Running a pipeline job: each stage's output is the next one's input, each skipped when its output exists for
the same inputs (`StageRecords`), the candidate scored on held-out data next to the served pair, and promoted
(registry, then the running app hot-reloaded) only past the gate."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mmray import storage
from mmray.artifacts.model_bundle import open_bundle
from mmray.config import IndexJob, PipelineJob, TrainJob, TuneJob, load_job, to_yaml
from mmray.config.base import validate
from mmray.config.data import require_split
from mmray.errors import ConfigError, reading
from mmray.pipeline.registry import ModelRegistry, RegistryEntry
from mmray.pipeline.stages import StageRecords, stage_key
from mmray.tasks.evaluation import evaluate_bundle
from mmray.tasks.registry import task_class
from mmray.tune.space import base_mapping

logger = logging.getLogger(__name__)
JobT = TypeVar("JobT", TrainJob, TuneJob)


@dataclass
class PipelineOutcome:
    """What a run decided: the candidate's entry, its score and the served one's, and whether it is served now."""

    entry: RegistryEntry
    metric: str
    candidate: float
    served: float | None
    promoted: bool
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"entry": self.entry.id, "model_version": self.entry.model_version,
                "index_version": self.entry.index_version, "metric": self.metric, "candidate": self.candidate,
                "served": self.served, "promoted": self.promoted, "reason": self.reason}  # fmt: skip


def _job_file(spec: PipelineJob, stage: str, path: str, base: Path, expected: type[JobT]) -> tuple[Path, JobT]:
    """The job file a stage names (relative to `base`) and its job, which must be of the `expected` kind."""
    resolved = Path(path) if Path(path).is_absolute() else base / path
    if not resolved.is_file():
        raise ConfigError(f"pipeline {spec.name}: {path} (relative to {base}) is not a job file")
    job = load_job(resolved)
    if not isinstance(job, expected):
        raise ConfigError(f"pipeline {spec.name}: {stage} names {resolved}, a {job.kind!r} job")
    return resolved, job


def train_job_of(spec: PipelineJob, base: Path, records: StageRecords) -> TrainJob:
    """The job the train stage runs: the tune stage's best trial, or the pipeline's train job."""
    if spec.tune is not None:
        tune_file, tune = _job_file(spec, "tune", spec.tune, base, TuneJob)
        base_job = base_mapping(tune, tune_file.parent)
        tune = tune.model_copy(update={"name": f"{spec.name}-tune", "storage_root": spec.storage_root,
                                       "base": base_job})  # fmt: skip
        key = stage_key(tune=to_yaml(tune))
        tune = tune.model_copy(update={"name": f"{tune.name}-{key[:10]}"})

        def search() -> dict[str, Any]:
            from mmray.tune.search import run_tune

            return {"best_job": run_tune(tune, resume=None).best_job}

        _check_index_split(spec, validate(TrainJob, base_job, str(tune_file)))
        best = records.run("tune", key, search)["best_job"]
        job = _tuned_job(best)
    else:
        job = _job_file(spec, "train", str(spec.train), base, TrainJob)[1]
        _check_index_split(spec, job)
    content = to_yaml(job.model_copy(update={"name": "-", "storage_root": "-"}))
    return job.model_copy(update={"name": f"{spec.name}-train-{stage_key(job=content)[:10]}",
                                  "storage_root": spec.storage_root})  # fmt: skip


def _tuned_job(uri: str) -> TrainJob:
    """The best trial's job file a search wrote, named where it is damaged."""
    with reading(uri, ConfigError):
        data = yaml.safe_load(storage.read_text(uri))
        if not isinstance(data, dict):
            raise TypeError(f"expected a mapping of sections, got {type(data).__name__}")
    return validate(TrainJob, data, uri)


def _check_index_split(spec: PipelineJob, job: TrainJob) -> None:
    """The index stage reads `index.split` of the train job's data: refused before any stage runs."""
    if spec.index is not None:
        try:
            require_split(job.data, spec.index.split, "index.split")
        except ValueError as exc:
            raise ConfigError(f"pipeline {spec.name}: index.split: {exc}") from None


def _train(spec: PipelineJob, job: TrainJob) -> dict[str, Any]:
    if spec.runner == "local":
        from mmray.train.local_run import run_local

        outcome = run_local(job)
    else:
        from mmray.train.trainer import run_training

        outcome = run_training(job)
    return {"model_bundle": outcome.model_bundle, "model_version": outcome.model_version}


def _index(spec: PipelineJob, job: TrainJob, trained: dict[str, Any], records: StageRecords) -> dict[str, Any]:
    settings = spec.index
    if settings is None:
        return {"index_bundle": None, "index_version": None}
    key = stage_key(model=trained["model_version"], index=settings.model_dump(mode="json"), data=to_yaml(job.data))

    def build() -> dict[str, Any]:
        from mmray.retrieval.indexing import run_index_job

        fields = {"kind": "index", "name": f"{spec.name}-index-{key[:10]}", "storage_root": spec.storage_root,
                  "checkpoint": trained["model_bundle"], "index": settings.model_dump(mode="json"),
                  "data": job.data.model_dump(mode="json")}  # fmt: skip
        index_job = validate(IndexJob, fields, f"pipeline {spec.name}")
        built = run_index_job(index_job)
        return {"index_bundle": built.index_bundle, "index_version": built.model_version}

    return records.run("index", key, build)


def gate_metric(spec: PipelineJob, bundle_uri: str) -> tuple[str, str]:
    """The metric the gate compares and whether higher is better: the job's, else the task's score."""
    bundle = open_bundle(bundle_uri)
    if bundle.task_config is None:
        raise ConfigError(f"{bundle_uri} records no task, so the gate cannot tell which metric to compare")
    score = task_class(bundle.task_config.kind)(bundle.task_config, bundle.model_config, bundle.processor).score
    return spec.gate.metric or score.metric, spec.gate.mode or score.mode


def _score(spec: PipelineJob, bundle_uri: str, metric: str) -> float:
    metrics = evaluate_bundle(spec.holdout, bundle_uri, spec.gate.split, spec.gate.batch_size)
    if metric not in metrics:
        raise ConfigError(f"gate.metric {metric!r} is not among the evaluation's metrics: {', '.join(sorted(metrics))}")
    return float(metrics[metric])


def admin_key(spec: PipelineJob) -> str | None:
    """The admin key a promotion reloads `promote.serve` with (None when it names no app)."""
    key = os.environ.get(spec.promote.admin_key_env)
    if spec.promote.serve is not None and not key:
        raise ConfigError(f"promote.serve is set but {spec.promote.admin_key_env} holds no admin key")
    return key


def reload_app(spec: PipelineJob, entry: RegistryEntry) -> None:
    """Hot-reload the app named by `promote.serve` with the entry's pair; a failed reload raises, the app unchanged."""
    from mmray.serving.client import ApiClient

    key = admin_key(spec)
    if spec.promote.serve is None or key is None:
        return
    body: dict[str, Any] = {"models": {spec.promote.model: entry.model_bundle}}
    if entry.index_bundle:
        body["index"] = entry.index_bundle
    ApiClient(spec.promote.serve, key, timeout_s=900).post("/v1/admin/reload", body)


def run_pipeline(spec: PipelineJob, base: Path) -> PipelineOutcome:
    """Run the stages of `spec` (job files resolved against `base`, the pipeline file's directory)."""
    records = StageRecords(spec.storage_root, spec.name)
    registry = ModelRegistry(spec.storage_root)
    admin_key(spec)
    job = train_job_of(spec, base, records)
    trained = records.run("train", job.name.rsplit("-", 1)[-1], lambda: _train(spec, job))
    indexed = _index(spec, job, trained, records)
    served = registry.current()
    known = registry.find(trained["model_version"], indexed["index_version"])
    if served is not None and known is not None and served.id == known.id:
        return PipelineOutcome(known, str(known.metrics.get("metric")), float(known.metrics.get("candidate", 0.0)),
                               None, True, "this pair is the one served already")  # fmt: skip
    metric, mode = gate_metric(spec, trained["model_bundle"])
    key = stage_key(model=trained["model_version"], index=indexed["index_version"], holdout=to_yaml(spec.holdout),
                    gate=spec.gate.model_dump(mode="json"), served=served.id if served else None)  # fmt: skip

    def evaluate() -> dict[str, Any]:
        candidate = _score(spec, trained["model_bundle"], metric)
        current = _score(spec, served.model_bundle, metric) if served is not None else None
        return {"metric": metric, "mode": mode, "candidate": candidate, "served": current,
                "served_entry": served.id if served else None}  # fmt: skip

    scores = records.run("evaluate", key, evaluate)
    candidate, current = float(scores["candidate"]), scores["served"]
    sign = 1.0 if mode == "max" else -1.0
    passed = current is None or sign * (candidate - float(current)) > spec.gate.margin
    entry = registry.evaluated(trained["model_bundle"], trained["model_version"], indexed["index_bundle"],
                               indexed["index_version"], scores, f"pipeline {spec.name}", passed)  # fmt: skip
    now = registry.current() if passed else served
    if not passed:
        reason = (f"refused: {metric} {candidate:.4f} on the held-out data does not beat the served entry "
                  f"{served.id if served else '-'} ({float(current):.4f}) by more than gate.margin "
                  f"{spec.gate.margin:g}; the served pair is untouched")  # fmt: skip
    elif (now.id if now else None) != (served.id if served else None):
        reason = (f"refused: the served entry changed from {served.id if served else '-'} to "
                  f"{now.id if now else '-'} while this pipeline ran (a promotion or rollback); it is kept, and a "
                  "rerun compares the candidate with it")  # fmt: skip
    else:
        reload_app(spec, entry)
        registry.record(entry.id, "promote", f"pipeline {spec.name}")
        shown = "no model was served" if current is None else f"the served entry scored {float(current):.4f}"
        reason = f"promoted: {metric} {candidate:.4f} on the held-out data ({shown})"
        logger.info("%s", reason)
        return PipelineOutcome(entry, metric, candidate, current, True, reason)
    logger.warning("%s", reason)
    return PipelineOutcome(entry, metric, candidate, current, False, reason)
