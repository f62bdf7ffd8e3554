"""Each job kind requires only the data splits it reads: an index of `val` needs only `data.val`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmray.config import EvaluateJob, IndexJob, TrainJob, load_job
from mmray.errors import ConfigError
from tests.support.cli import invoke_mmray

SPLIT = {"captions": "annotations/captions_val.json", "images": "images/val"}
MODEL = {"model": {"kind": "dual_encoder"}, "task": {"kind": "retrieval"}}


def _job(path: Path, kind: str, data: dict[str, Any], **sections: Any) -> Path:
    job = {"kind": kind, "name": "own", "data": {"source": "coco", **data}, **sections}
    if kind in ("index", "evaluate"):
        job["checkpoint"] = "runs/own-clip"
    path.write_text(yaml.safe_dump(job))
    return path


def test_an_index_or_evaluate_job_of_val_needs_only_data_val(tmp_path: Path) -> None:
    index = load_job(_job(tmp_path / "index.yaml", "index", {"val": SPLIT}))
    assert isinstance(index, IndexJob) and index.data.train is None  # type: ignore[union-attr]
    assert isinstance(load_job(_job(tmp_path / "evaluate.yaml", "evaluate", {"val": SPLIT})), EvaluateJob)
    on_train = load_job(_job(tmp_path / "train-index.yaml", "index", {"train": SPLIT}), ["index.split=train"])
    assert isinstance(on_train, IndexJob)
    trained = load_job(_job(tmp_path / "train.yaml", "train", {"train": SPLIT}, **MODEL))
    assert isinstance(trained, TrainJob) and trained.data.val is None  # type: ignore[union-attr]


def test_a_missing_split_is_named_with_what_reads_it(tmp_path: Path) -> None:
    index = _job(tmp_path / "index.yaml", "index", {"val": SPLIT})
    with pytest.raises(ConfigError, match=r"index.yaml \(with overrides\): data: no train split: index.split 'train' "
                       r"reads data.train \(captions, images\), and this data section gives only val"):  # fmt: skip
        load_job(index, ["index.split=train"])
    with pytest.raises(ConfigError, match=r"data: index.split 'test' reads split 'test', but a data section has only"):
        load_job(index, ["index.split=test"])
    with pytest.raises(ConfigError, match=r"train.yaml: data: no train split: a train job reads data.train"):
        load_job(_job(tmp_path / "train.yaml", "train", {"val": SPLIT}, **MODEL))
    with pytest.raises(ConfigError, match=r"data: no val split: evaluate.split 'val' reads data.val"):
        load_job(_job(tmp_path / "evaluate.yaml", "evaluate", {"train": SPLIT}))
    with pytest.raises(ConfigError, match=r"data: no split given: set train and/or val"):
        load_job(_job(tmp_path / "none.yaml", "index", {}))


def test_the_cli_names_the_missing_split_in_one_line(tmp_path: Path) -> None:
    index = _job(tmp_path / "index.yaml", "index", {"val": SPLIT})
    shown = invoke_mmray("config", "show", str(index))
    assert shown.returncode == 0 and "train:" not in yaml.safe_load(shown.stdout)["data"]
    refused = invoke_mmray("index", str(index), "index.split=train")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "data: no train split: index.split 'train' reads data.train" in refused.stderr
    evaluated = invoke_mmray("evaluate", str(_job(tmp_path / "train.yaml", "train", {"train": SPLIT}, **MODEL)))
    assert evaluated.returncode == 2 and "no val split: evaluate.split 'val' reads data.val" in evaluated.stderr
