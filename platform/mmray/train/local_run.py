"""Training in this one process, without Ray (`mmray train --local`, the GPU check, fast tests): the same loop, task,
metrics, checkpoints and run outputs as a Ray Train run of one worker. Checkpoints are registered in the run's
`local_checkpoints.json` once complete (what Ray Train's snapshot is to its runs); a rerun resumes from the latest one
there."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmray import storage
from mmray.artifacts.model_bundle import local_bundle
from mmray.config import TrainJob
from mmray.devices import pick_device
from mmray.errors import ConfigError
from mmray.train.checkpoint_score import CHECKPOINT_SCORE
from mmray.train.context import TrainContext
from mmray.train.driver import TrainOutcome, json_metrics, loop_config, prepare_driver_data, write_outputs
from mmray.train.epochs import run_loop
from mmray.train.run_pointers import Candidate, best_checkpoint, write_pointers
from mmray.train.run_record import LOCAL_LEDGER, Rerun, check_run_directory, read_local_ledger, record_job

logger = logging.getLogger(__name__)
OnReport = Callable[[dict[str, Any], str | None], None]
"""Called with every epoch's metrics and, when it was checkpointed, the registered checkpoint's URI."""


class LocalContext(TrainContext):
    """Rank 0 of 1 on `device`; checkpoints copied into the run directory and registered in its ledger,
    the best `num_to_keep` (by the task's score) and the latest kept."""

    def __init__(
        self,
        device: torch.device,
        run_dir: str,
        num_to_keep: int | None,
        score_mode: str,
        on_report: OnReport | None = None,
    ) -> None:
        self.rank, self.world, self.device, self.node = 0, 1, device, "local"
        self.run_dir, self.num_to_keep, self.score_mode = run_dir, num_to_keep, score_mode
        self.on_report = on_report
        self.entries: list[dict[str, Any]] = read_local_ledger(run_dir)

    def restored_checkpoint(self) -> AbstractContextManager[Path | None]:
        if not self.entries:
            return nullcontext()
        return local_bundle(storage.join(self.run_dir, self.entries[-1]["name"]))

    def place_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None, checkpoint_name: str | None) -> None:
        uri = None
        if checkpoint is not None and checkpoint_name is not None:
            uri = storage.join(self.run_dir, checkpoint_name)
            storage.upload_dir(checkpoint, uri)
            score = metrics.get(CHECKPOINT_SCORE, math.nan)
            entry = {"name": checkpoint_name, "metrics": {"epoch": metrics["epoch"], CHECKPOINT_SCORE: score}}
            self.entries = [e for e in self.entries if e["name"] != checkpoint_name] + [entry]
            dropped = self._prune()
            ledger = [{**e, "metrics": json_metrics(e["metrics"])} for e in self.entries]
            storage.write_text(storage.join(self.run_dir, LOCAL_LEDGER), json.dumps(ledger, indent=2))
            for name in dropped:  # after the ledger stops naming them, as Ray Train deletes after its snapshot
                storage.delete_tree(storage.join(self.run_dir, name))
            # the pointers from the ledger (a Ray run's callback lists the run instead); the latest is `uri`
            write_pointers(self.run_dir, uri, best_checkpoint(self.kept()[1], uri, self.score_mode))
        if self.on_report is not None:
            self.on_report(metrics, uri)  # a registered checkpoint: the latest is always kept

    def _prune(self) -> list[str]:
        """Keep the best `num_to_keep` by measured score (unmeasured rank last) and the latest, as Ray Train
        does; the names of the others, to delete."""
        if self.num_to_keep is None or len(self.entries) <= self.num_to_keep:
            return []
        sign = 1.0 if self.score_mode == "max" else -1.0

        def rank(entry: dict[str, Any]) -> float:
            score = entry["metrics"].get(CHECKPOINT_SCORE)
            return -math.inf if score is None or math.isnan(score) else sign * score

        ranked = sorted(self.entries, key=rank, reverse=True)
        keep = {e["name"] for e in ranked[: self.num_to_keep]} | {self.entries[-1]["name"]}
        dropped = [e["name"] for e in self.entries if e["name"] not in keep]
        self.entries = [e for e in self.entries if e["name"] in keep]
        return dropped

    def kept(self) -> tuple[str | None, list[Candidate]]:
        """The latest checkpoint's URI and every kept one's with its score."""
        candidates = [(storage.join(self.run_dir, e["name"]), e["metrics"].get(CHECKPOINT_SCORE)) for e in self.entries]
        return (candidates[-1][0] if candidates else None), candidates


def local_device(spec: TrainJob, device: str | None = None) -> torch.device:
    """`device` when given, else the job's: its GPU with `train.use_gpu`, the CPU without."""
    if device is not None:
        return pick_device(device)
    if spec.train.use_gpu and not torch.cuda.is_available():
        raise ConfigError("train.use_gpu is true but this process sees no GPU; set train.use_gpu=false")
    return torch.device("cuda" if spec.train.use_gpu else "cpu")


def run_local(
    spec: TrainJob,
    rerun: Rerun = "check",
    device: str | None = None,
    stop_after_epoch: int | None = None,
    on_report: OnReport | None = None,
    threads: int | None = None,
) -> TrainOutcome:
    """Train `spec` in this process as one worker (`train.num_workers` is not used); re-running the same
    name under the same root resumes the run, as with Ray Train. `stop_after_epoch`: stop once that epoch is
    checkpointed, as Ctrl-C would, the schedule still that of `train.epochs` (to check resumption).
    `on_report` sees every evaluation once its checkpoint is registered; `threads`: default every core."""
    where = local_device(spec, device)
    check_run_directory(spec, rerun, runner="local")
    data = prepare_driver_data(spec, can_stream=False)
    record_job(spec)
    config = loop_config(data, share=lambda value: value)
    config["threads"] = spec.train.threads_per_worker or threads or os.cpu_count() or 1
    config["stop_after_epoch"] = stop_after_epoch
    num_to_keep = data.spec.train.checkpoint.num_to_keep
    context = LocalContext(where, config["run_dir"], num_to_keep, data.score.mode, on_report)
    logger.info("training %s in this process on %s (no Ray Train)", spec.name, where)
    run_loop(config, context)
    return write_outputs(data.spec, *context.kept(), data.score.mode)
