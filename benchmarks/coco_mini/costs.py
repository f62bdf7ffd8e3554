"""What frozen towers cost on all of coco-mini with the shipped job: an epoch with the towers at every
step against one from cached features, and a 40-epoch run's stored checkpoints against one bundle."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from mmray.artifacts.model_bundle import export_bundle
from mmray.config import TrainJob, load_job
from mmray.train.trainer import run_training


def epoch_seconds(job: Path, storage_root: str, cache: str) -> float:
    """The median wall time of epochs 2–4 of the shipped job on all of coco-mini."""
    spec = load_job(job, [f"name=speed-{cache}", f"storage_root={storage_root}", "train.epochs=4",
                          "train.eval_every=4", f"train.feature_cache={cache}"])  # fmt: skip
    assert isinstance(spec, TrainJob)
    history = run_training(spec, rerun="new").history
    return statistics.median(float(row["epoch_seconds"]) for row in history[1:])


def _tree_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def checkpoint_sizes(job: Path, storage_root: str) -> dict[str, float]:
    """A 40-epoch run: what it stores (checkpoints it keeps, frozen weights) against one exported bundle."""
    spec = load_job(job, ["name=size-40", f"storage_root={storage_root}", "train.epochs=40", "train.eval_every=10"])
    assert isinstance(spec, TrainJob)
    outcome = run_training(spec, rerun="new")
    run_dir = Path(outcome.run_dir)
    stored = sum(_tree_bytes(p) for p in run_dir.glob("checkpoint_epoch_*")) + _tree_bytes(run_dir / "frozen")
    exported = Path(storage_root) / "size-40-exported"
    shutil.rmtree(exported, ignore_errors=True)
    export_bundle(outcome.model_bundle, str(exported))
    return {"stored_mb": stored / 2**20, "bundle_mb": _tree_bytes(exported) / 2**20,
            "checkpoints_kept": len(list(run_dir.glob("checkpoint_epoch_*")))}  # fmt: skip
