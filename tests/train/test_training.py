from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load

from mmray import storage
from tests.support.cli import invoke_mmray
from tests.support.ray_lines import RAY_PROCESS_LINE, own_lines
from tests.train.conftest import (
    REPO_ROOT,
    last_json,
    mmray_command,
    run_mmray,
    stop_once,
    tiny_job,
    wait_for_line,
    write_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # its commands join the session's Ray
RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_medr", "t2i_medr")


def test_two_workers_train_continue_and_evaluate(data_root: Path, tmp_path: Path) -> None:
    """Resuming a run by its rerun: the signal test (the epoch it names is the one resumed); the history
    carried through a restore: the killed-worker test."""
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "tiny", min_lr_ratio=0.1))
    trained = run_mmray("train", str(job), env={"MMRAY_PROGRESS": "bar"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", trained.stderr)  # without the terminal's colour codes
    assert "epoch 2/2" in drawn and "30/30" in drawn, "the progress bar, drawn to its end"
    assert " step 5/15 " not in trained.stderr, "the bar replaces the periodic step lines"
    ray_lines = [line for line in trained.stderr.splitlines() if RAY_PROCESS_LINE.match(line) and "[mmray]" not in line]
    assert not ray_lines, f"without -v a Ray process shows only mmray's own lines: {ray_lines}"
    two = last_json(trained.stdout)
    assert two["epoch"] == 2 and Path(two["model_bundle"]).name == "checkpoint_epoch_0002"

    run_dir = Path(two["run_dir"])
    history = json.loads((Path(two["model_bundle"]) / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["step"] == two["step"] == 2 * history[0]["step"]
    assert {k: history[1][k] for k in RECALL_KEYS} == {k: two[k] for k in RECALL_KEYS}
    assert json.loads((run_dir / "metrics.json").read_text())["epoch"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = invoke_mmray("train", str(job), "name=nothing-left", f"continue_from={run_dir}", "--local")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"continue_from {run_dir}/checkpoint_epoch_0002 has trained 2 epochs; train.epochs=2" in done.stderr

    first_epoch = str(run_dir / "checkpoint_epoch_0001")
    overrides = ("name=tiny-continued", "train.lr=0.0003", f"continue_from={first_epoch}")
    continued = invoke_mmray("train", str(job), *overrides, "--local")  # the loop continues alike on either runner
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert "continues" in continued.stdout + continued.stderr
    other = continued.last_json()
    assert other["epoch"] == 2 and other["step"] == two["step"], "the epoch count and steps carry on"
    assert abs(other["lr"] / two["lr"] - 0.1) < 1e-6, "the new lr at the same point of the schedule"
    other_history = json.loads((Path(other["model_bundle"]) / "history.json").read_text())
    assert other_history[0] == history[0] and other_history[1]["train_loss"] != history[1]["train_loss"]

    evaluated = invoke_mmray("evaluate", str(job), "--checkpoint", two["model_bundle"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = evaluated.last_json()
    assert metrics["model_version"] == two["model_version"]
    assert {k: metrics[k] for k in RECALL_KEYS} == {k: two[k] for k in RECALL_KEYS}
    assert (metrics["images"], metrics["captions"]) == (96, 288)


def _wait_for_registered_checkpoint(run_dir: Path, name: str, process: subprocess.Popen[str]) -> None:
    """Until Ray Train's checkpoint manager has recorded checkpoint `name` (not merely written it)."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while not (snapshot.exists() and name in snapshot.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{name} was not registered (process exit code {process.poll()})")
        time.sleep(0.5)


def test_killed_worker_is_replaced_and_resumes_from_its_checkpoint_with_frozen_towers_stored_once(
    data_root: Path, tmp_path: Path
) -> None:
    """Frozen towers: their features are computed once by both workers together, read back by the replaced
    workers, and kept out of every checkpoint (written once, in `frozen/`, though the run resumed)."""
    epochs = 12  # the heads alone train: epochs are short, and the kill must land mid-run
    job = tiny_job(data_root, tmp_path / "runs", "killed", epochs=epochs)
    job["model"]["image"]["trainable_blocks"] = 0
    job["model"]["text"]["trainable_blocks"] = 0
    job["train"]["checkpoint"] = {"num_to_keep": None}
    path = write_job(tmp_path / "job.yaml", job)
    log = tmp_path / "train.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            mmray_command("train", str(path)),
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ.copy(),
        )
        try:
            _wait_for_registered_checkpoint(tmp_path / "runs" / "killed", "checkpoint_epoch_0001", process)
            placed = re.search(r"\(pids (\d+), (\d+)\)", log.read_text())
            assert placed, "the placement line names no worker pids"
            os.kill(int(placed.group(2)), signal.SIGKILL)  # rank 1
            assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_text()
    resumed = re.search(r"resumed from .*checkpoint_epoch_(\d+) after epoch (\d+)", text)
    assert resumed and 1 <= int(resumed.group(2)) < epochs, text[-3000:]
    final = last_json(text)
    assert final["epoch"] == epochs and final["step"] == epochs * (480 // 32), "the step count carried on"
    history = json.loads((Path(final["latest_bundle"]) / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))

    assert text.count("train images: 480 features computed once") == 1, text[-3000:]
    assert text.count("train captions: 1440 features computed once") == 1
    assert "train images: 480 cached features read" in text, "the replaced workers read the features back"
    run_dir = Path(final["run_dir"])
    assert len(list((run_dir / "frozen").iterdir())) == 1, "the frozen part is written once though resumed"
    checkpoints = sorted(run_dir.glob("checkpoint_epoch_*"))
    assert len(checkpoints) == epochs
    frozen_keys = set(load(next((run_dir / "frozen").iterdir()).read_bytes()))
    assert frozen_keys
    for checkpoint in checkpoints:
        assert not frozen_keys & set(load((checkpoint / "model.safetensors").read_bytes())), checkpoint.name

    evaluated = invoke_mmray("evaluate", str(path), "--checkpoint", str(checkpoints[-1]))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert {k: evaluated.last_json()[k] for k in RECALL_KEYS} == {k: final[k] for k in RECALL_KEYS}


@pytest.mark.own_ray
def test_ctrl_c_and_sigterm_say_what_is_checkpointed_and_a_rerun_under_other_settings_is_refused(
    data_root: Path, tmp_path: Path, ray_cluster: str
) -> None:
    """Each run starts a Ray of its own, with another Ray on the machine (the session's) that it must not
    be confused with: Ctrl-C stops the first run, a rerun under other settings is refused, the rerun that
    resumes it is stopped by SIGTERM."""
    run_dir = tmp_path / "runs" / "stopped"
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "stopped", epochs=50))
    first = functools.partial(_wait_for_registered_checkpoint, run_dir, "checkpoint_epoch_0001")
    code, stderr = stop_once(["train", str(job)], signal.SIGINT, tmp_path / "1.log", first)
    assert code == 130, stderr[-3000:]
    said = re.search(r"interrupted: run stopped: epoch (\d+) is checkpointed; `mmray train (\S+)` resumes it", stderr)
    own = own_lines(stderr)
    assert said and said.group(2) == str(job) and "Traceback" not in own, stderr[-3000:]
    assert "multiple active Ray instances" not in stderr, stderr[-3000:]
    assert "aborting the training run" in stderr, "the run ends before Ray shuts down under it"
    snapshot = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    stopped_at = int(said.group(1))
    assert f"checkpoint_epoch_{stopped_at:04d}" in snapshot, "the epoch named is one a rerun resumes from"

    other = invoke_mmray("train", str(job), "train.lr=0.001")  # refused before any Ray starts
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "train.lr: 0.003 → 0.001" in other.stderr and "--force-new" in other.stderr

    resumed = rf"resumed from .*checkpoint_epoch_{stopped_at:04d} after epoch {stopped_at}\b"
    log = tmp_path / "2.log"
    code, said = stop_once(["train", str(job)], signal.SIGTERM, log, functools.partial(wait_for_line, log, resumed))
    assert code == 143, said[-3000:]
    stopped = re.search(r"terminated: run stopped: epoch (\d+) is checkpointed; `mmray train \S+` resumes it", said)
    assert stopped and int(stopped.group(1)) >= stopped_at, said[-3000:]
    assert "SIGTERM received" not in said and "Traceback" not in said, said[-3000:]
    assert "multiple active Ray instances" not in said, said[-3000:]
    placed = re.compile(r"\[mmray\] 2 workers \(cpu, \w+ auto-chosen\) on 1 node: ")
    placement = [line for line in said.splitlines() if placed.search(line)]
    assert len(placement) == 1 and re.search(r"ranks 0, 1 \(pids \d+, \d+\)$", placement[0]), said[-3000:]


def test_checkpoints_go_to_s3(data_root: Path, tmp_path: Path, s3_env: str) -> None:
    root = storage.join(s3_env, "runs")
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, root, "on-s3", epochs=1, grad_accum_steps=2))
    trained = invoke_mmray("train", str(job), "--local")  # Ray Train's own S3 checkpoints: tests/cluster, tests/tune
    assert trained.returncode == 0, trained.stderr[-3000:]
    final = trained.last_json()
    assert final["step"] == (480 // 32) // 2, "one optimizer step per two micro-batches"
    bundle = final["model_bundle"]
    assert bundle == storage.join(root, "on-s3", "checkpoint_epoch_0001")
    names = {storage.relative_to(uri, bundle) for uri in storage.list_files(bundle)}
    assert {"model.safetensors", "model.yaml", "task.yaml", "processor.json", "bundle.json"} <= names
    assert {"train_state.pt", "word_tokenizer.json"} <= names
    assert storage.exists(storage.join(root, "on-s3", "metrics.json"))
    evaluated = invoke_mmray("evaluate", str(job), "--checkpoint", bundle)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert evaluated.last_json()["t2i_R@1"] == final["t2i_R@1"]

    warm = invoke_mmray("train", str(job), "name=warm", f"init_from={bundle}", "train.lr=1e-12", "--local")
    assert warm.returncode == 0, warm.stderr[-3000:]
    before = load(storage.read_bytes(storage.join(bundle, "model.safetensors")))
    after = load(storage.read_bytes(storage.join(warm.last_json()["model_bundle"], "model.safetensors")))
    weights = [name for name in before if name.endswith("weight") and "running" not in name]
    assert weights and all(torch.allclose(before[n], after[n], atol=1e-6) for n in weights), "started from the bundle"


def test_shards_loader_trains_two_workers_from_the_prepared_split_alone(data_root: Path, tmp_path: Path) -> None:
    """A split prepared by `mmray data prepare --shards` (its JPEGs emptied afterwards, so only the shards can
    feed the run), read by two Ray Train workers themselves (`train.loader=shards`); the frozen text tower's
    features computed once by both, each its share of the shards. Streaming the JPEGs through Ray Data is
    tests/train/test_ray_data_feed.py's; the order of the shard feed and its features, test_shard_feed's."""
    job = tiny_job(data_root, tmp_path / "runs", "streamed", epochs=1, loader="shards", num_workers=2)
    job["model"]["text"]["trainable_blocks"] = 0
    job["data"]["root"] = str(tmp_path / "data")
    path = write_job(tmp_path / "job.yaml", job)
    prepared = invoke_mmray("data", "prepare", str(path), "--shards", str(tmp_path / "shards"))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    for image in (tmp_path / "data").glob("*/images/*/*.jpg"):
        image.write_bytes(b"")
    job["data"].update(prepared=str(tmp_path / "shards"), image_check="none")
    trained = run_mmray("train", str(write_job(path, job)), env={"MMRAY_PROGRESS": "lines"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "epoch 1/1 step 5/15 " in trained.stderr and "━" not in trained.stderr, "plain lines, no bar"
    said = " ".join(trained.stderr.split())  # log lines wrap at the terminal's width
    assert "train: 480 images read from the prepared shards" in said and "Ray Data" not in said, said[-3000:]
    assert "train: frozen caption features of 480 images computed once, kept at" in said
    final = last_json(trained.stdout)
    assert final["epoch"] == 1 and final["step"] == 480 // 32
    assert final["t2i_R@10"] > 10 / 96
    assert 0 <= final["input_wait_fraction"] < 1 and final["first_batch_seconds"] > 0


def test_every_caption_once_per_epoch_with_augmented_images(data_root: Path, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_job(data_root, tmp_path / "runs", "augmented", epochs=1))
    overrides = ("train.augment.crop=random_resized", "train.augment.flip=unless_sides", "data.captions_per_epoch=all")
    result = invoke_mmray("train", str(job), *overrides, "--local")  # batches are the loop's: the runner adds nothing
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.last_json()["step"] == 480 * 3 // 32, "an epoch is a pass over the 1440 captions"


def test_a_ray_run_keeping_an_unevaluated_checkpoint_resumes(data_root: Path, tmp_path: Path) -> None:
    """Ray Train's snapshot stores a NaN score as null and could not rank it on restore, so a run whose kept
    checkpoints included an epoch without evaluation failed on every rerun; it resumes, and its best model is
    the evaluated checkpoint."""
    job = tiny_job(data_root, tmp_path / "runs", "unevaluated", epochs=2, eval_every=2, num_workers=1)
    job["train"]["checkpoint"] = {"num_to_keep": None}
    path = write_job(tmp_path / "job.yaml", job)
    first = invoke_mmray("train", str(path))
    assert first.returncode == 0, first.stderr[-3000:]
    assert last_json(first.stdout)["epoch"] == 2

    resumed = invoke_mmray("train", str(path), "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    three = last_json(resumed.stdout)
    assert three["epoch"] == 3
    history = json.loads((Path(three["run_dir"]) / "metrics.json").read_text())["history"]
    assert [epoch["checkpoint_score"] is None for epoch in history] == [True, False, False]
    best = max(history[1:], key=lambda epoch: epoch["checkpoint_score"])["epoch"]
    assert Path(three["model_bundle"]).name == f"checkpoint_epoch_{best:04d}"

    state = Path(three["latest_bundle"]) / "train_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    damaged = run_mmray("train", str(path), "train.epochs=4")
    assert damaged.returncode == 2, damaged.stderr[-3000:]
    assert f"error: training run unevaluated: {state} is damaged" in damaged.stderr, damaged.stderr[-3000:]
    assert damaged.stderr.count("1 worker (cpu") == 1, "one attempt: every retry would load the same file"


def test_a_diverged_ray_run_stops_once_instead_of_being_retried(data_root: Path, tmp_path: Path) -> None:
    """Divergence (and a score the task does not measure) fails alike on every attempt: Ray Train's
    `max_failures` retries only cost time before the same error, so the run stops at the first with its message.
    Its epoch streams the images through Ray Data (`train.loader=ray_data`) into both workers."""
    job = tiny_job(data_root, tmp_path / "runs", "diverges", epochs=2, lr=1e30, max_failures=2, loader="ray_data")
    trained = run_mmray("train", str(write_job(tmp_path / "job.yaml", job)), env={"MMRAY_PROGRESS": "lines"})
    said = " ".join(trained.stderr.split())
    assert trained.returncode == 1, trained.stderr[-3000:]
    assert "training run diverges: the model diverged in epoch 1: " in said, said[-3000:]
    assert "streaming 480 training images, decoded by up to " in said, said[-3000:]
    assert said.count("epoch 1/2 step 5/15 ") == 1, "one attempt, not 1 + train.max_failures"
    assert "No checkpoint was written" in said and not list((tmp_path / "runs" / "diverges").glob("checkpoint_*"))
    assert "Traceback" not in trained.stderr
