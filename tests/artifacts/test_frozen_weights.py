"""Frozen weights stored once per run: checkpoints reference them by content hash, bundles load them
from the run, beside themselves (exported), or from the model itself when it holds the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load

from mmray.artifacts.frozen_weights import BESIDE, frozen_part, frozen_state_names, write_once
from mmray.artifacts.model_bundle import export_bundle, load_weights, open_bundle, read_bundle, write_bundle
from mmray.config.model import DualEncoderConfig, SmallCnnConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.errors import BundleError
from mmray.models.registry import build_model, build_processor

CAPTIONS = ["a small red circle in the top left", "two shapes: a big blue square and a green triangle"]


def _config(trainable_blocks: int | None) -> DualEncoderConfig:
    image = SmallCnnConfig(kind="small_cnn", width=8, blocks=3, image_size=32, trainable_blocks=trainable_blocks)
    return DualEncoderConfig(image=image, embed_dim=8)


def _embed(model: torch.nn.Module, processor: object) -> torch.Tensor:
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tokens = processor.tokenize(CAPTIONS)  # type: ignore[attr-defined]
    with torch.no_grad():
        out = model.eval()(processor.normalize(pixels), tokens.ids, tokens.mask)  # type: ignore[attr-defined]
    return torch.cat([out.image_embeddings, out.text_embeddings])


def test_the_frozen_part_is_the_frozen_towers_parameters_and_batch_norm_statistics() -> None:
    config = _config(trainable_blocks=1)
    model = build_model(config, build_processor(config, CAPTIONS))
    names = frozen_state_names(model)
    assert any(name.endswith("running_mean") for name in names), "frozen blocks' batch-norm statistics"
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and not names & trained
    assert frozen_state_names(build_model(_config(None), build_processor(_config(None), CAPTIONS))) <= {
        "log_logit_scale"
    }


def _checkpoint_of(run: Path, epoch: int, model: torch.nn.Module, config: DualEncoderConfig, processor: object) -> Path:
    found = frozen_part(model)
    assert found is not None
    part, data = found
    write_once(str(run), part, data)
    directory = run / f"checkpoint_epoch_{epoch:04d}"
    write_bundle(directory, model, config, processor, RetrievalTaskConfig(), frozen=part)  # type: ignore[arg-type]
    return directory


def test_checkpoints_hold_only_what_trains_and_load_whole(tmp_path: Path) -> None:
    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    model = build_model(config, processor)
    run = tmp_path / "run"
    first = _checkpoint_of(run, 1, model, config, processor)
    with torch.no_grad():
        model.text_encoder.embed.weight.add_(0.5)  # "an epoch of training" on the text tower
    second = _checkpoint_of(run, 2, model, config, processor)
    whole = tmp_path / "whole"
    write_bundle(whole, model, config, processor, RetrievalTaskConfig())

    assert len(list((run / "frozen").iterdir())) == 1, "the frozen part is written once"
    frozen_names = frozen_state_names(model)
    slim_keys = set(load((second / "model.safetensors").read_bytes()))
    assert not slim_keys & frozen_names and slim_keys | frozen_names == set(model.state_dict())
    frozen_bytes = next((run / "frozen").iterdir()).stat().st_size
    slim = (second / "model.safetensors").stat().st_size
    assert slim + frozen_bytes < (whole / "model.safetensors").stat().st_size + 4096, "nothing stored twice"
    manifest = json.loads((second / "bundle.json").read_text())
    assert manifest["frozen_weights"]["path"].startswith("../frozen/")

    loaded = read_bundle(second)
    assert torch.equal(_embed(loaded.model, processor), _embed(model, processor))
    assert not torch.equal(_embed(read_bundle(first).model, processor), _embed(model, processor))


def test_a_checkpoint_copied_alone_says_where_its_frozen_weights_are(tmp_path: Path) -> None:
    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    model = build_model(config, processor)
    checkpoint = _checkpoint_of(tmp_path / "run", 1, model, config, processor)
    alone = tmp_path / "elsewhere" / "bundle"
    alone.parent.mkdir()
    checkpoint.rename(alone)
    with pytest.raises(BundleError, match=r"frozen weights in \.\./frozen/.*mmray export"):
        read_bundle(alone)

    (alone / BESIDE).write_bytes(next((tmp_path / "run" / "frozen").iterdir()).read_bytes())
    assert torch.equal(_embed(read_bundle(alone).model, processor), _embed(model, processor))
    (alone / BESIDE).write_bytes(b"not the weights")
    with pytest.raises(BundleError, match="not the frozen weights"):
        read_bundle(alone)


def test_a_resuming_model_that_holds_the_same_frozen_weights_needs_no_file(tmp_path: Path) -> None:
    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    torch.manual_seed(7)
    model = build_model(config, processor)
    checkpoint = _checkpoint_of(tmp_path / "run", 1, model, config, processor)
    for stored in (tmp_path / "run" / "frozen").iterdir():
        stored.unlink()
    torch.manual_seed(7)
    same = build_model(config, processor)  # as a resumed run rebuilds it: its pretrained towers loaded
    load_weights(same, checkpoint)
    assert torch.equal(_embed(same, processor), _embed(model, processor))
    torch.manual_seed(8)
    with pytest.raises(BundleError, match="not there nor beside it"):
        load_weights(build_model(config, processor), checkpoint)


def test_a_checkpoint_on_s3_loads_its_runs_frozen_weights(tmp_path: Path, s3_env: str) -> None:
    from mmray import storage

    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    model = build_model(config, processor)
    _checkpoint_of(tmp_path / "run", 3, model, config, processor)
    storage.upload_dir(tmp_path / "run", f"{s3_env}/runs/r")
    loaded = open_bundle(f"{s3_env}/runs/r/checkpoint_epoch_0003")
    assert torch.equal(_embed(loaded.model, processor), _embed(model, processor))


def test_mmray_export_makes_a_bundle_that_loads_without_its_run(tmp_path: Path) -> None:
    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    model = build_model(config, processor)
    checkpoint = _checkpoint_of(tmp_path / "run", 2, model, config, processor)
    mmray = str(Path(sys.executable).parent / "mmray")
    out = tmp_path / "exported"
    result = subprocess.run([mmray, "export", str(checkpoint), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["bundle"] == str(out) and (out / BESIDE).is_file()
    shutil.rmtree(tmp_path / "run")
    loaded = read_bundle(out)
    assert loaded.version == answer["model_version"]
    assert torch.equal(_embed(loaded.model, processor), _embed(model, processor))

    again = subprocess.run([mmray, "export", str(out), str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and f"error: {out} already exists" in again.stderr and "Traceback" not in again.stderr


def test_an_export_to_s3_loads_from_there(tmp_path: Path, s3_env: str) -> None:
    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    model = build_model(config, processor)
    checkpoint = _checkpoint_of(tmp_path / "run", 2, model, config, processor)
    target = f"{s3_env}/exported"
    answer = export_bundle(str(checkpoint), target)
    shutil.rmtree(tmp_path / "run")
    loaded = open_bundle(target)
    assert loaded.version == answer["model_version"]
    assert torch.equal(_embed(loaded.model, processor), _embed(model, processor))
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(target, target)


def test_an_export_to_s3_cut_off_midway_is_not_taken_for_a_bundle(
    tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest goes up last: an upload that stops after some files leaves no bundle.json, so the
    partial copy is neither opened as a bundle nor refused as an existing one by the retry."""
    from mmray import storage

    config = _config(trainable_blocks=0)
    processor = build_processor(config, CAPTIONS)
    checkpoint = _checkpoint_of(tmp_path / "run", 2, build_model(config, processor), config, processor)
    target, upload, calls = f"{s3_env}/exported", storage.upload_file, []

    def upload_then_fail(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 3:
            raise ConnectionError("the connection dropped")
        return upload(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "upload_file", upload_then_fail)
    with pytest.raises(ConnectionError):
        export_bundle(str(checkpoint), target)
    monkeypatch.setattr(storage, "upload_file", upload)
    assert storage.list_files(target), "some files were uploaded before the failure"
    assert not storage.exists(storage.join(target, "bundle.json"))
    assert export_bundle(str(checkpoint), target)["bundle"] == target
    assert open_bundle(target).version
