"""`mmray train --local`: the loop in one process without Ray, with the same metrics, checkpoints and run
outputs; evaluation on a chosen device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmray.artifacts.manifests import resolve_model_bundle, run_pointer
from mmray.config import TrainJob
from mmray.devices import resolve_precision
from mmray.errors import ConfigError, TrainingError
from mmray.train.local_run import run_local
from tests.support.cli import invoke_mmray
from tests.train.conftest import last_json, tiny_job, write_job

pytestmark = pytest.mark.slow


def test_local_training_resumes_and_evaluates_on_the_chosen_device(data_root: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "local", epochs=1))
    first = invoke_mmray("train", str(job), "--local", env={"RAY_ADDRESS": ""})
    assert first.returncode == 0, first.stderr[-3000:]
    auto = resolve_precision("auto", torch.device("cpu")).precision
    assert f"[mmray] 1 worker (cpu, {auto} auto-chosen) on 1 node: local rank 0" in first.stderr
    assert "Ray's logs" not in first.stderr, "no Ray was started"
    one = last_json(first.stdout)
    assert one["epoch"] == 1 and one["precision"] == auto and Path(one["model_bundle"]).name == "checkpoint_epoch_0001"

    second = invoke_mmray("train", str(job), "--local", "train.epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    two = last_json(second.stdout)
    assert two["epoch"] == 2 and two["step"] == 2 * one["step"]
    run_dir = Path(two["run_dir"])
    ledger = json.loads((run_dir / "local_checkpoints.json").read_text())
    assert [entry["name"] for entry in ledger] == ["checkpoint_epoch_0001", "checkpoint_epoch_0002"]
    assert [h["epoch"] for h in json.loads((Path(two["model_bundle"]) / "history.json").read_text())] == [1, 2]

    on_ray = invoke_mmray("train", str(job), "train.epochs=3")
    assert on_ray.returncode == 2 and "was trained in one process (--local); resume it with --local" in on_ray.stderr

    evaluated = invoke_mmray("evaluate", str(job), "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = last_json(evaluated.stdout)
    assert metrics["device"] == "cpu" and metrics["model_version"] == two["model_version"]
    assert metrics["t2i_R@1"] == pytest.approx(two["t2i_R@1"])
    if not torch.cuda.is_available():
        refused = invoke_mmray("evaluate", str(job), "--device", "cuda")
        assert refused.returncode == 2 and "device 'cuda' was asked for, but this process sees no GPU" in refused.stderr


def test_a_resumed_local_run_whose_ledger_holds_an_unmeasured_checkpoint_finishes(
    data_root: Path, tmp_path: Path
) -> None:
    """An epoch that is not evaluated is registered with no score (null in the ledger); the run that resumes
    after it reads that null back and still picks the measured checkpoint as its best."""
    job = tiny_job(data_root, tmp_path / "runs", "unmeasured", epochs=2, eval_every=2, num_workers=1)
    spec = TrainJob.model_validate(job)
    run_local(spec, stop_after_epoch=1)
    ledger = json.loads((tmp_path / "runs" / "unmeasured" / "local_checkpoints.json").read_text())
    assert ledger[0]["metrics"]["checkpoint_score"] is None

    outcome = run_local(spec)
    assert outcome.metrics["epoch"] == 2
    assert Path(outcome.model_bundle).name == "checkpoint_epoch_0002"


def test_a_local_run_keeps_its_best_checkpoints_and_the_latest_as_ray_train_does(
    data_root: Path, tmp_path: Path
) -> None:
    job = tiny_job(data_root, tmp_path / "runs", "keep", epochs=3, eval_every=1, num_workers=1)
    job["train"]["checkpoint"] = {"num_to_keep": 1, "score_order": "min"}  # recall rises: an early best
    outcome = run_local(TrainJob.model_validate(job))
    scores = {epoch["epoch"]: epoch["checkpoint_score"] for epoch in outcome.history}
    best = min(scores.values())
    kept = {p.name for p in Path(outcome.run_dir).glob("checkpoint_epoch_*")}
    assert "checkpoint_epoch_0003" in kept, "the latest is kept"
    assert all(scores[int(name[-4:])] == best for name in kept - {"checkpoint_epoch_0003"})
    assert len(kept) == (1 if scores[3] == best else 2), kept
    assert scores[int(Path(outcome.model_bundle).name[-4:])] == best


def test_a_local_run_stopped_while_pruning_resumes(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop between deleting an old checkpoint and rewriting the ledger left the ledger naming a deleted
    checkpoint, and every rerun failed; the ledger is rewritten first."""
    from mmray import storage

    job = tiny_job(data_root, tmp_path / "runs", "pruned", epochs=3, num_workers=1)
    job["train"]["checkpoint"] = {"num_to_keep": 1}
    spec = TrainJob.model_validate(job)
    delete_tree = storage.delete_tree

    def delete_then_stop(uri: str) -> None:
        delete_tree(uri)
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "delete_tree", delete_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_local(spec)
    monkeypatch.setattr(storage, "delete_tree", delete_tree)
    ledger = json.loads((tmp_path / "runs" / "pruned" / "local_checkpoints.json").read_text())
    assert all((tmp_path / "runs" / "pruned" / entry["name"]).is_dir() for entry in ledger)
    assert run_local(spec).metrics["epoch"] == 3


def test_a_stopped_extension_leaves_pointers_to_checkpoints_it_keeps(data_root: Path, tmp_path: Path) -> None:
    """Extending a finished run prunes the checkpoints its outputs named; the pointers follow every
    registered checkpoint, so a stop midway leaves a run that evaluate, export and serving can read."""
    from mmray.artifacts.manifests import resolve_model_bundle, run_pointer
    from mmray.artifacts.model_bundle import open_bundle

    job = tiny_job(data_root, tmp_path / "runs", "extended", epochs=2, num_workers=1)
    job["train"]["checkpoint"] = {"num_to_keep": 1}
    run_local(TrainJob.model_validate(job))
    job["train"]["epochs"] = 5

    def stop_after_the_fourth(metrics: dict[str, object], checkpoint: str | None) -> None:
        if metrics["epoch"] == 4:
            raise KeyboardInterrupt  # Ctrl-C once epoch 4 is registered, before the run's outputs

    with pytest.raises(KeyboardInterrupt):
        run_local(TrainJob.model_validate(job), on_report=stop_after_the_fourth)
    run_dir = str(tmp_path / "runs" / "extended")
    kept = sorted(p.name for p in Path(run_dir).glob("checkpoint_epoch_*"))
    latest, best = run_pointer(run_dir, "latest_model.json"), run_pointer(run_dir, "best_model.json")
    assert latest is not None and best is not None
    assert Path(latest).name == "checkpoint_epoch_0004" and Path(best).name in kept
    assert open_bundle(resolve_model_bundle(run_dir)).version


def test_the_ray_callback_points_at_the_kept_checkpoints(tmp_path: Path) -> None:
    from mmray.artifacts.manifests import run_pointer
    from mmray.train.pointer_callback import PointAtKept

    for epoch, score in ((2, 0.7), (3, float("nan")), (5, 0.4)):
        directory = tmp_path / f"checkpoint_epoch_{epoch:04d}"
        directory.mkdir()
        (directory / "bundle.json").write_text(json.dumps({"metrics": {"epoch": epoch, "checkpoint_score": score}}))
    (tmp_path / "checkpoint_epoch_0006").mkdir()  # being written: no manifest yet
    PointAtKept(str(tmp_path), "max").after_report(None, [{}], checkpoint=None)
    assert run_pointer(str(tmp_path), "best_model.json") is None, "nothing registered, nothing written"
    PointAtKept(str(tmp_path), "max").after_report(None, [{}], checkpoint=object())
    assert run_pointer(str(tmp_path), "latest_model.json") == str(tmp_path / "checkpoint_epoch_0005")
    assert run_pointer(str(tmp_path), "best_model.json") == str(tmp_path / "checkpoint_epoch_0002")
    PointAtKept(str(tmp_path), "min").after_report(None, [{}], checkpoint=object())
    assert run_pointer(str(tmp_path), "best_model.json") == str(tmp_path / "checkpoint_epoch_0005")


def test_a_damaged_checkpoint_manifest_leaves_the_pointers_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Ray Train callback runs in the run's controller: a damaged manifest there must not end it."""
    from mmray.train.pointer_callback import PointAtKept

    for epoch in (1, 2):
        directory = tmp_path / f"checkpoint_epoch_{epoch:04d}"
        directory.mkdir()
        (directory / "bundle.json").write_text(json.dumps({"metrics": {"epoch": epoch, "checkpoint_score": 0.5}}))
    damaged = tmp_path / "checkpoint_epoch_0002" / "bundle.json"
    for content in ('{"metrics": ', "[]", '{"metrics": []}'):
        damaged.write_text(content)
        caplog.clear()
        PointAtKept(str(tmp_path), "max").after_report(None, [{}], checkpoint=object())
        assert f"could not update the model pointers of {tmp_path}: {damaged}" in caplog.text, content


def test_a_damaged_manifest_of_the_best_checkpoint_is_named_when_the_run_writes_its_outputs(
    data_root: Path, tmp_path: Path
) -> None:
    from mmray.errors import BundleError
    from mmray.train.driver import write_outputs

    spec = TrainJob.model_validate(tiny_job(data_root, tmp_path / "runs", "outputs"))
    checkpoint = tmp_path / "runs" / "outputs" / "checkpoint_epoch_0001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "history.json").write_text(json.dumps([{"epoch": 1, "train_loss": 1.0}]))
    (checkpoint / "bundle.json").write_text('{"metrics": {"epoch": 1}}')
    with pytest.raises(BundleError, match=rf"^{checkpoint}/bundle\.json is damaged or not what mmray wrote"):
        write_outputs(spec, str(checkpoint), [(str(checkpoint), 0.5)], "max")
    assert not (tmp_path / "runs" / "outputs" / "metrics.json").exists(), "no summary of a run it cannot name"


def test_a_run_whose_weights_diverge_stops_before_they_are_scored_or_kept(data_root: Path, tmp_path: Path) -> None:
    """A learning rate that blows the weights up to NaN / infinity stops the run after that epoch, before it is
    scored or checkpointed (a NaN model ranked every caption first and became the run's best)."""
    spec = TrainJob.model_validate(tiny_job(data_root, tmp_path / "runs", "diverges", epochs=2, num_workers=1, lr=1e30))
    with pytest.raises(TrainingError, match=r"the model diverged in epoch 1: .* NaN or infinite .* lower train\.lr"):
        run_local(spec)
    run_dir = tmp_path / "runs" / "diverges"
    assert not list(run_dir.glob("checkpoint_epoch_*")) and not (run_dir / "best_model.json").exists()


def test_a_moved_run_points_at_its_own_checkpoints(data_root: Path, tmp_path: Path) -> None:
    """A run moved aside (`--force-new`) or copied elsewhere resolves to its own checkpoints, not to those now
    at its old place (its export gave the new run's model)."""
    spec = TrainJob.model_validate(tiny_job(data_root, tmp_path / "runs", "moved", epochs=1, num_workers=1))
    run_local(spec)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    (tmp_path / "runs" / "moved").rename(moved)
    assert resolve_model_bundle(str(moved)) == str(moved / "checkpoint_epoch_0001")
    assert run_pointer(str(moved), "latest_model.json") == str(moved / "checkpoint_epoch_0001")


def test_a_score_attribute_the_task_does_not_measure_is_refused_at_the_first_evaluation(
    data_root: Path, tmp_path: Path
) -> None:
    """A mistyped `train.checkpoint.score_attribute` left every checkpoint unscored and the best one unranked."""
    job = tiny_job(data_root, tmp_path / "runs", "mistyped", epochs=2, num_workers=1)
    job["train"]["checkpoint"] = {"score_attribute": "recall_maen", "num_to_keep": 1}
    with pytest.raises(ConfigError, match=r"score_attribute 'recall_maen' is not one of .*recall_mean"):
        run_local(TrainJob.model_validate(job))
    assert not list((tmp_path / "runs" / "mistyped").glob("checkpoint_epoch_*"))
