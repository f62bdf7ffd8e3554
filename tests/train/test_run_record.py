"""Re-running a training run's name: resumable changes pass, others are refused naming the keys,
unless the run is resumed anyway or moved aside (locally and on S3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmray import storage
from mmray.config import load_job
from mmray.errors import ConfigError
from mmray.train.run_record import JOB_RECORD, differences, latest_checkpointed_epoch
from tests.train.conftest import prepare_run

REPO_JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _job(root: str, *overrides: str):  # type: ignore[no-untyped-def]
    return load_job(REPO_JOBS / "shapes-clip.yaml", [f"storage_root={root}", *overrides])


def test_only_resumable_keys_may_change_when_a_name_is_rerun(tmp_path: Path) -> None:
    root = str(tmp_path)
    prepare_run(_job(root))
    prepare_run(_job(root, "train.epochs=12", "train.num_workers=1", "train.eval_every=1"))
    recorded = yaml.safe_load((tmp_path / "shapes-clip" / JOB_RECORD).read_text())
    assert recorded["train"]["epochs"] == 12, "the record follows a resumed run"
    with pytest.raises(ConfigError, match=r"model.embed_dim: 128 → 64; train.lr: 0.002 → 0.001\. .*--resume"):
        prepare_run(_job(root, "train.lr=0.001", "model.embed_dim=64"))
    assert yaml.safe_load((tmp_path / "shapes-clip" / JOB_RECORD).read_text())["train"]["lr"] == 0.002

    prepare_run(_job(root, "train.lr=0.001"), rerun="resume")
    assert yaml.safe_load((tmp_path / "shapes-clip" / JOB_RECORD).read_text())["train"]["lr"] == 0.001
    (tmp_path / "shapes-clip" / "checkpoint_epoch_0003").mkdir()
    (tmp_path / "shapes-clip" / "checkpoint_epoch_0003" / "train_state.pt").write_bytes(b"x")
    assert latest_checkpointed_epoch(str(tmp_path / "shapes-clip")) == 3

    prepare_run(_job(root, "train.lr=0.0005"), rerun="new")
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("shapes-clip.replaced-")]
    assert (aside / "checkpoint_epoch_0003" / "train_state.pt").exists(), "the earlier run is kept, moved aside"
    assert latest_checkpointed_epoch(str(tmp_path / "shapes-clip")) is None
    assert yaml.safe_load((tmp_path / "shapes-clip" / JOB_RECORD).read_text())["train"]["lr"] == 0.0005


def test_differences_are_listed_key_by_key() -> None:
    old = {"train": {"lr": 0.1, "epochs": 3, "checkpoint": {"num_to_keep": 2}}, "task": {"loss": {"kind": "infonce"}}}
    new = {
        "train": {"lr": 0.1, "epochs": 9, "checkpoint": {"num_to_keep": None}},
        "task": {"loss": {"kind": "triplet", "margin": 0.2}},
    }
    assert differences(old, new) == [("task.loss.kind", "infonce", "triplet"), ("task.loss.margin", None, 0.2)]


def test_a_run_on_s3_is_moved_aside_too(s3_env: str) -> None:
    root = storage.join(s3_env, "rerun")
    storage.ensure_bucket(root)
    prepare_run(_job(root))
    storage.write_text(storage.join(root, "shapes-clip", "checkpoint_epoch_0001", "train_state.pt"), "x")
    prepare_run(_job(root, "train.lr=0.001"), rerun="new")
    moved = [f for f in storage.list_files(root) if ".replaced-" in f]
    assert len(moved) == 2 and any(f.endswith("/checkpoint_epoch_0001/train_state.pt") for f in moved)
    assert latest_checkpointed_epoch(storage.join(root, "shapes-clip")) is None


def test_a_run_recorded_before_the_orientation_setting_read_stored_pixels(tmp_path: Path) -> None:
    """Its job.yaml lacks `orientation`: it trained on stored pixels, so the setting's new default (exif) is a
    change a rerun must name, not a default filled in (which resumed it turning photos, its version changed)."""
    root = str(tmp_path)
    prepare_run(_job(root))
    record = tmp_path / "shapes-clip" / JOB_RECORD
    recorded = yaml.safe_load(record.read_text())
    del recorded["model"]["image"]["orientation"]
    record.write_text(yaml.safe_dump(recorded))
    (tmp_path / "shapes-clip" / "checkpoint_epoch_0001").mkdir()
    (tmp_path / "shapes-clip" / "checkpoint_epoch_0001" / "train_state.pt").write_bytes(b"x")
    with pytest.raises(
        ConfigError,
        match=r"model\.image\.orientation: 'stored' → 'exif'\. .*set "
        r"model\.image\.orientation back to resume it \(--resume cannot change the model\)",
    ):
        prepare_run(_job(root))
    prepare_run(_job(root, "model.image.orientation=stored"))
