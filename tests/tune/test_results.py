"""Files a search reads back from its trials: each checkpoint's bundle manifest when the best trial's run left
no best-model pointer, and the pointer a Tune checkpoint holds to its Train checkpoint; damaged, they are
refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.tune import Checkpoint

from mmray.artifacts.manifests import MANIFEST
from mmray.errors import BundleError
from mmray.tune.reporting import POINTER, TrainPointer
from mmray.tune.results import best_trial_bundle


def _checkpoint(run: Path, epoch: int, manifest: str) -> Path:
    directory = run / f"checkpoint_epoch_{epoch:04d}"
    directory.mkdir(parents=True)
    (directory / MANIFEST).write_text(manifest)
    return directory


@pytest.mark.parametrize("damaged", ['{"metrics": {"recall_mean": 0.', "[]", '{"metrics": [0.7]}'])
def test_the_best_checkpoint_of_a_run_without_pointers_is_found_and_a_damaged_manifest_named(
    tmp_path: Path, damaged: str
) -> None:
    _checkpoint(tmp_path, 1, json.dumps({"metrics": {"recall_mean": 0.4}}))
    best = _checkpoint(tmp_path, 2, json.dumps({"metrics": {"recall_mean": 0.6}}))
    assert best_trial_bundle(str(tmp_path), "recall_mean", "max") == str(best)
    broken = _checkpoint(tmp_path, 3, damaged) / MANIFEST
    with pytest.raises(BundleError, match=rf"^{broken} is damaged or not what mmray wrote"):
        best_trial_bundle(str(tmp_path), "recall_mean", "max")


@pytest.mark.parametrize("damaged", ['{"trial_id": "t_00000", "run": ', '{"trial_id": "t_00000"}', "[1, 2]"])
def test_a_damaged_pointer_of_a_tune_checkpoint_is_named(tmp_path: Path, damaged: str) -> None:
    pointer = TrainPointer("t_00000", "trial-t_00000", str(tmp_path / "checkpoint_epoch_0002"), 2)
    (tmp_path / POINTER).write_text(json.dumps(pointer.__dict__))
    assert TrainPointer.of(Checkpoint.from_directory(tmp_path)) == pointer
    (tmp_path / POINTER).write_text(damaged)
    with pytest.raises(BundleError, match=rf"^{tmp_path / POINTER} is damaged or not what mmray wrote"):
        TrainPointer.of(Checkpoint.from_directory(tmp_path))
