"""A pipeline's stage records: a damaged one is named, not a traceback, and the stage is not run over it; the
tune stage's search is named by its inputs, its base job file's content included."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mmray.config import PipelineJob
from mmray.errors import ConfigError
from mmray.pipeline.run import train_job_of
from mmray.pipeline.stages import StageRecords
from tests.train.conftest import tiny_job, write_job


@pytest.mark.parametrize("content", [b"", b'{"outputs": {"model', b"[]", b'{"stage": "train"}', b'{"outputs": 3}',
                                     b"\xff\xfe"])  # fmt: skip
def test_a_damaged_stage_record_is_named(tmp_path: Path, content: bytes) -> None:
    records = StageRecords(str(tmp_path), "p")
    record = Path(records.directory) / "train-k.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(content)
    with pytest.raises(ConfigError, match=f"{record} is damaged"):
        records.run("train", "k", lambda: pytest.fail("the stage ran over its damaged record"))
    assert record.read_bytes() == content


def test_a_tune_stage_searches_anew_under_another_name_when_its_base_job_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched: list[tuple[str, bool | None]] = []
    best = write_job(tmp_path / "best.yaml", tiny_job(tmp_path, "unused", "best"))

    def run_tune(job: Any, resume: bool | None = False, base_directory: Path | None = None) -> SimpleNamespace:
        searched.append((job.name, resume))
        return SimpleNamespace(best_job=str(best))

    monkeypatch.setattr("mmray.tune.search.run_tune", run_tune)
    write_job(
        tmp_path / "tune.yaml", {"kind": "tune", "name": "t", "base": "base.yaml", "space": {"train.lr": "grid([1])"}}
    )
    holdout = {"source": "shapes", "root": str(tmp_path), "images": 140, "val_images": 100, "seed": 33}
    spec = PipelineJob.model_validate({"kind": "pipeline", "name": "p", "storage_root": str(tmp_path / "runs"),
                                       "tune": "tune.yaml", "index": None, "holdout": holdout})  # fmt: skip
    for lr in (0.003, 0.001, 0.003):
        write_job(tmp_path / "base.yaml", tiny_job(tmp_path, "unused", "base", lr=lr))
        train_job_of(spec, tmp_path, StageRecords(spec.storage_root, spec.name))
    assert len(searched) == 2 and searched[0][0] != searched[1][0], searched
    assert all(name.startswith("p-tune-") and resume is None for name, resume in searched), searched


@pytest.mark.parametrize(("content", "said"), [
    ("", r"is damaged or not what mmray wrote"),
    ("kind: [unclosed", r"is damaged or not what mmray wrote \(\w*Error"),
    ("- a list", r"is damaged or not what mmray wrote \(TypeError"),
    ("kind: train\nname: best\n", r"data"),
])  # fmt: skip
def test_a_damaged_best_job_of_the_tune_stage_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, said: str
) -> None:
    best = tmp_path / "runs" / "best_job.yaml"
    best.parent.mkdir()
    best.write_text(content)
    monkeypatch.setattr("mmray.tune.search.run_tune", lambda *_, **__: SimpleNamespace(best_job=str(best)))
    write_job(tmp_path / "base.yaml", tiny_job(tmp_path, "unused", "base"))
    write_job(
        tmp_path / "tune.yaml", {"kind": "tune", "name": "t", "base": "base.yaml", "space": {"train.lr": "grid([1])"}}
    )
    holdout = {"source": "shapes", "root": str(tmp_path), "images": 140, "val_images": 100, "seed": 33}
    spec = PipelineJob.model_validate({"kind": "pipeline", "name": "p", "storage_root": str(tmp_path / "runs"),
                                       "tune": "tune.yaml", "index": None, "holdout": holdout})  # fmt: skip
    with pytest.raises(ConfigError, match=rf"{best}.*{said}"):
        train_job_of(spec, tmp_path, StageRecords(spec.storage_root, spec.name))
