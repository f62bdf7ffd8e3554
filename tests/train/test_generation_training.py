"""Generation tasks trained end to end in one process (the loop Ray Train runs, without Ray): the VAE with
R-precision from a retrieval run, the GAN's two optimizers through a resume, the caption decoder with its
baseline; then the bundles used from the command line (in this process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mmray.artifacts.model_bundle import open_bundle
from mmray.config import TrainJob
from mmray.tasks.evaluation import evaluate_bundle
from mmray.train.local_run import run_local
from tests.support.cli import invoke_mmray as run_mmray

pytestmark = pytest.mark.slow

ENCODER = {
    "embed_dim": 32,
    "image": {"kind": "small_cnn", "width": 8, "blocks": 4},
    "text": {"kind": "small_transformer", "width": 32, "layers": 1, "heads": 2, "max_length": 40},
}
TRAIN = {"epochs": 1, "batch_size": 32, "lr": 0.003, "num_workers": 2, "log_every_steps": 5, "eval_batch_size": 64}
EVALUATION = {"images": 48, "candidates": 10, "grid_captions": 3, "grid_samples": 2}


def _job(data_root: Path, runs: Path, name: str, model: dict[str, Any], task: dict[str, Any], **extra: Any) -> dict:
    return {
        "kind": "train",
        "name": name,
        "storage_root": str(runs),
        "data": {"source": "shapes", "root": str(data_root), "images": 576, "val_images": 96, "seed": 1},
        "model": model,
        "task": task,
        "train": TRAIN,
        **extra,
    }


@pytest.fixture(scope="module")
def retrieval_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    runs = tmp_path_factory.mktemp("generation-runs")
    job = _job(data_root, runs, "clip", {"kind": "dual_encoder", **ENCODER}, {"kind": "retrieval"})
    return run_local(TrainJob.model_validate(job)).run_dir


def test_vae_trains_with_r_precision_and_its_bundle_generates(
    retrieval_run: str, data_root: Path, tmp_path: Path
) -> None:
    job = _job(
        data_root,
        tmp_path / "runs",
        "vae",
        {"kind": "conditional_vae", "encoder": ENCODER, "latent_dim": 4, "width": 8},
        {"kind": "vae", "kl_warmup_steps": 10, "evaluation": {**EVALUATION, "evaluator": retrieval_run}},
    )
    outcome = run_local(TrainJob.model_validate(job))
    metrics = outcome.metrics
    assert {"train_reconstruction", "train_kl", "val_reconstruction", "val_kl", "reconstruction_mse"} <= set(metrics)
    assert metrics["elbo"] == pytest.approx(-(metrics["val_reconstruction"] + metrics["val_kl"]))
    assert 0.0 <= metrics["r_precision"] <= 1.0 and 0.0 <= metrics["real_r_precision"] <= 1.0
    assert metrics["r_precision_candidates"] == 10 and metrics["sample_diversity"] > 0.0
    assert metrics["checkpoint_score"] == metrics["r_precision"]
    grid = Path(outcome.model_bundle) / "figures" / "samples.png"
    assert grid.read_bytes().startswith(b"\x89PNG")
    evaluation = evaluate_bundle(TrainJob.model_validate(job).data, outcome.model_bundle, batch_size=64)
    assert evaluation["r_precision"] == pytest.approx(metrics["r_precision"])
    assert evaluation["elbo"] == pytest.approx(metrics["elbo"], rel=1e-4)
    assert [Path(p).name for p in evaluation["figures"]] == ["samples.png"]

    out = tmp_path / "grid.png"
    texts = ["--text", "a red circle on the left", "--text", "a big blue square"]
    generated = run_mmray("generate", outcome.run_dir, *texts, "--n", "3", "--out", str(out), "--seed", "4")
    assert generated.returncode == 0, generated.stderr[-3000:]
    summary = generated.last_json()
    assert summary["out"] == str(out) and summary["model_version"] == outcome.model_version
    first = out.read_bytes()
    assert first.startswith(b"\x89PNG")
    again = run_mmray("generate", outcome.run_dir, *texts, "--n", "3", "--out", str(out), "--seed", "4")
    assert again.returncode == 0 and out.read_bytes() == first, "one seed, one grid"


def test_gan_resumes_both_optimizers(retrieval_run: str, data_root: Path, tmp_path: Path) -> None:
    job = _job(
        data_root,
        tmp_path / "runs",
        "gan",
        {"kind": "conditional_gan", "encoder": ENCODER, "noise_dim": 8, "width": 8},
        {"kind": "gan", "evaluation": {**EVALUATION, "evaluator": retrieval_run}},
        init_from=retrieval_run,
    )
    spec = TrainJob.model_validate(job)
    one = run_local(spec).metrics
    assert {"train_loss_discriminator", "train_loss_generator", "train_d_real", "train_d_fake"} <= set(one)
    resumed = run_local(spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 2})}))
    two = resumed.metrics
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0]["train_loss_generator"] == one["train_loss_generator"], "epoch 1 was not trained again"
    assert two["step"] == 2 * one["step"] and 0.0 <= two["r_precision"] <= 1.0
    state = torch.load(Path(resumed.latest_bundle) / "train_state.pt", weights_only=True)
    for name in ("discriminator", "generator"):
        steps = {float(s["step"]) for s in state["optimizers"][name]["state"].values()}
        assert steps == {float(two["step"])}, f"the {name} optimizer continued from epoch 1"
    assert state["schedulers"]["generator"]["last_epoch"] == two["step"]
    conditioning = open_bundle(resumed.model_bundle).model.encoder.state_dict()
    clip = open_bundle(retrieval_run).model.state_dict()
    assert all(torch.equal(conditioning[k], clip[k]) for k in clip), "the frozen text tower is the retrieval run's"


def test_caption_decoder_trains_against_its_baseline_and_captions_files(data_root: Path, tmp_path: Path) -> None:
    job = _job(
        data_root,
        tmp_path / "runs",
        "caption",
        {"kind": "caption_decoder", "encoder": ENCODER, "width": 32, "layers": 1, "heads": 2},
        {"kind": "caption", "evaluation": {"images": 40, "beam": 2}},
    )
    outcome = run_local(TrainJob.model_validate(job))
    metrics = outcome.metrics
    assert {"bleu4", "cider_d", "nn_bleu4", "nn_cider_d", "val_loss"} <= set(metrics)
    assert metrics["checkpoint_score"] == metrics["cider_d"] and metrics["nn_cider_d"] > 0.0
    examples = json.loads((Path(outcome.model_bundle) / "figures" / "captions.json").read_text())
    assert len(examples) == 24 and {"caption", "references", "nearest_neighbour"} <= set(examples[0])

    images = sorted((data_root / "n576-v96-seed1-64px-c3-h0.05-q2x2" / "images" / "val").glob("*.jpg"))[:2]
    captioned = run_mmray("caption", outcome.run_dir, *map(str, images), "--beam", "3", "--json")
    assert captioned.returncode == 0, captioned.stderr[-3000:]
    lines = [json.loads(line) for line in captioned.stdout.strip().splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    assert all(isinstance(line["caption"], str) for line in lines)
    wrong = run_mmray("caption", outcome.run_dir, str(tmp_path / "missing.png"))
    unwrapped = "".join(wrong.stderr.replace("│", " ").split())  # the error box wraps a long path anywhere
    assert wrong.returncode == 2 and "missing.png" in unwrapped, wrong.stderr
