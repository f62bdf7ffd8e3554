"""Mistakes people make with `mmray train` / `tune` / `config`, through the CLI's `main` in this process:
each exits 2 with one `error:` line naming what was wrong, no traceback, and a train job's mistakes are found
before Ray starts (the driver checks files, weights and the batch against the split first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cli import invoke_mmray, ray_never_started


def _job(tmp_path: Path, **changes: object) -> Path:
    job = {
        "kind": "train",
        "name": "mistake",
        "storage_root": str(tmp_path / "runs"),
        "data": {"source": "shapes", "root": str(tmp_path / "data"), "images": 40, "val_images": 10},
        "model": {"kind": "dual_encoder", "image": {"kind": "small_cnn", "width": 4, "blocks": 2}},
        "task": {"kind": "retrieval"},
        "train": {"epochs": 1, "batch_size": 8},
        **changes,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.batch_size=64"], "train.batch_size 64 is larger than the training split (30 examples)"),
        (["model.image.weights=/no/such/weights.pth"], "model.image.weights: /no/such/weights.pth does not exist"),
        (["model.image.weights=pkg:no_such_package/w.pth"], "no installed package named 'no_such_package'"),
        (["data.source=coco", "data.train.captions=/no/captions.json", "data.train.images=/no/images"], "/no/"),
        (["continue_from=/no/run"], "continue_from /no/run: neither a training checkpoint"),
        (["init_from=/no/bundle"], "/no/bundle is not a model bundle"),
        (["data.captions_per_epoch=all", "train.loader=ray_data"], "use train.loader=memory or captions_per_epoch=one"),
        (["data.captions_per_epoch=all", "train.batch_size=32"], "30 images, fewer than train.batch_size 32"),
        (["train.augment.flip=unless_sides", "train.loader=ray_data"], "use train.loader=memory or augment.flip=none"),
        (["train.augment.crop_scale=[0.9, 0.1]"], "crop_scale must satisfy 0 < low <= high <= 1"),
    ],
)
def test_a_train_job_mistake_is_named_before_ray_starts(tmp_path: Path, overrides: list[str], message: str) -> None:
    with ray_never_started():
        result = invoke_mmray("train", str(_job(tmp_path)), *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_flags_and_kinds_that_exclude_each_other(tmp_path: Path) -> None:
    both = invoke_mmray("train", str(_job(tmp_path)), "--resume", "--force-new")
    assert both.returncode == 2 and "--resume and --force-new exclude each other" in both.stderr
    schema = invoke_mmray("config", "schema", "trian")
    assert schema.returncode == 2 and "unknown job kind 'trian'; job kinds: train, index, evaluate" in schema.stderr
    tune = tmp_path / "tune.yaml"
    tune.write_text(
        yaml.safe_dump(
            {
                "kind": "tune",
                "name": "pbt",
                "base": str(_job(tmp_path)),
                "overrides": {"train.epochs": 3},
                "space": {"model.embed_dim": "choice([32, 64])"},
                "tune": {"num_samples": 2, "scheduler": {"kind": "pbt", "perturbation_interval": 1}},
            }
        )
    )
    with ray_never_started():
        refused = invoke_mmray("tune", str(tune))
    assert refused.returncode == 2 and "space.model.embed_dim: a population-based trial" in refused.stderr
    assert "Traceback" not in refused.stderr
