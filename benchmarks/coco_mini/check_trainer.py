"""The chosen setting through mmray's real trainer (Ray Train, the job file as shipped) on one report fold,
against the in-process loop on the same fold: the benchmark's numbers are the shipped job's."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from mmray.config import TrainJob, load_job
from mmray.config.data import CocoData
from mmray.train.trainer import run_training

from .features import Features
from .folds import Fold, fold_data
from .heads import HeadSetting
from .protocol import heads_method, held_out_rsum, rsum


@dataclass(frozen=True)
class TrainerCheck:
    fold: str
    trainer_rsum: float
    in_process_rsum: float
    trainer_seconds: float
    in_process_seconds: float


def write_fold_files(captions: Path, features: Features, fold: Fold, directory: Path) -> tuple[Path, Path]:
    """COCO caption files of the fold's training and held-out images."""
    coco = json.loads(captions.read_text())
    written = []
    for name, rows in (("train", fold.train_rows), ("val", fold.test_rows)):
        wanted = set(features.image_ids[rows].tolist())
        subset = {**coco, "images": [i for i in coco["images"] if i["id"] in wanted],
                  "annotations": [a for a in coco["annotations"] if a["image_id"] in wanted]}  # fmt: skip
        path = directory / f"{fold.name}-{name}.json"
        path.write_text(json.dumps(subset))
        written.append(path)
    return written[0], written[1]


def check_trainer(job: Path, features: Features, fold: Fold, storage: Path) -> TrainerCheck:
    """Train the job as it ships on `fold` with Ray Train, and the same setting in this process."""
    base = load_job(job)
    assert isinstance(base, TrainJob) and isinstance(base.data, CocoData) and base.data.train is not None
    storage.mkdir(parents=True, exist_ok=True)
    train, val = write_fold_files(Path(base.data.train.captions), features, fold, storage)
    overrides = [f"name=check-{fold.name}", f"storage_root={storage}", f"data.train.captions={train}",
                 f"data.val.captions={val}", f"train.eval_every={base.train.epochs}"]  # fmt: skip
    spec = load_job(job, overrides)
    assert isinstance(spec, TrainJob)
    started = time.perf_counter()
    outcome = run_training(spec, rerun="new")
    trainer_seconds = time.perf_counter() - started
    started = time.perf_counter()
    embed = heads_method(HeadSetting.from_job(spec))(fold_data(features, fold.train_rows))
    ours = held_out_rsum(embed, fold_data(features, fold.test_rows))
    return TrainerCheck(fold.name, rsum(outcome.metrics), ours, trainer_seconds, time.perf_counter() - started)
