"""A pretrained pair as the `encoder` of other models: a fusion model warm-started from the pair's bundle,
a caption decoder conditioned on its image tower, both rebuilt from their bundles without the folder;
encoder sections without a kind stay dual encoders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mmray.artifacts.model_bundle import load_initial_weights, read_bundle, write_bundle
from mmray.config import ConfigError
from mmray.config.fusion import FusionModelConfig
from mmray.config.generation import CaptionDecoderConfig
from mmray.config.jobs import validate_job
from mmray.config.model import DualEncoderConfig, HfDualEncoderConfig
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.fusion_model import FusionModel
from mmray.models.hf_towers import PretrainedDualEncoder
from mmray.models.registry import build_model, build_processor
from tests.support.tiny_pairs import write_tiny_clip

CAPTIONS = ["a red circle", "a small blue square in the top left corner"]


def test_a_fusion_model_starts_from_a_pair_bundle_and_rebuilds_without_the_folder(tmp_path: Path) -> None:
    pair_config = HfDualEncoderConfig(pretrained=str(write_tiny_clip(tmp_path / "clip")), text={"max_length": 48})
    processor = build_processor(pair_config)
    pair = build_model(pair_config, processor)
    with torch.no_grad():
        pair.get_parameter("image_projection.weight").mul_(2.0)  # as a fine-tuned pair differs from its folder
    write_bundle(tmp_path / "pair", pair, pair_config, processor)

    config = FusionModelConfig(
        encoder=pair_config,
        fusion={"kind": "attention", "width": 32, "heads": 2, "layers": 1},
        heads={"objects": {"outputs": 4, "hidden": 16}},
    )
    assert build_processor(config).fingerprint() == processor.fingerprint()
    model = build_model(config, processor)
    assert isinstance(model, FusionModel) and isinstance(model.encoder, PretrainedDualEncoder)
    load_initial_weights(model, "fusion", tmp_path / "pair")
    assert torch.equal(model.encoder.image_projection.weight, pair.get_parameter("image_projection.weight"))

    images = processor.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    batch = processor.tokenize(CAPTIONS)
    model.eval()
    with torch.no_grad():
        output = model(images, batch.ids, batch.mask)
    assert output.predictions["objects"].shape == (2, 4) and output.embeddings is not None
    assert output.embeddings.logit_bias is None, "CLIP has no logit bias"

    write_bundle(tmp_path / "fusion", model, config, processor)
    shutil.rmtree(tmp_path / "clip")
    rebuilt = read_bundle(tmp_path / "fusion").model
    with torch.no_grad():
        again = rebuilt(images, batch.ids, batch.mask)
    assert torch.equal(again.predictions["objects"], output.predictions["objects"])


def test_a_caption_decoder_reads_the_pairs_image_tower(tmp_path: Path) -> None:
    encoder = HfDualEncoderConfig(pretrained=str(write_tiny_clip(tmp_path / "clip")), text={"max_length": 24})
    config = CaptionDecoderConfig(encoder=encoder, width=32, layers=1, heads=2)
    processor = build_processor(config)
    model = build_model(config, processor)
    assert isinstance(model, CaptionDecoder)
    assert model.max_length == 24, "the pair's tokenizer's length"
    assert model.cell_positions.shape == (1, 4 * 4 + 1, 32), "32 px images in 8 px patches, and the pooled slot"
    in_encoder = [name for name, p in model.named_parameters() if p.requires_grad and name.startswith("encoder.")]
    trained = {name.split(".")[1] for name in in_encoder}
    assert trained == {"image_encoder"}, "the text side and projections are frozen"

    images = processor.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    ids = processor.tokenize(CAPTIONS).ids
    model.eval()
    with torch.no_grad():
        logits = model(images, ids)
    assert logits.shape == (2, 23, processor.tokenizer.vocab_size)

    write_bundle(tmp_path / "captioner", model, config, processor)
    shutil.rmtree(tmp_path / "clip")
    with torch.no_grad():
        assert torch.equal(read_bundle(tmp_path / "captioner").model(images, ids), logits)


def test_encoder_sections_choose_their_kind() -> None:
    base = {"kind": "train", "name": "x", "data": {"source": "shapes"}}
    base["task"] = {"kind": "predict", "heads": {"o": {"kind": "multilabel", "target": "labels"}}}
    plain = validate_job({**base, "model": {"kind": "fusion", "encoder": {"embed_dim": 8}}}, "job.yaml")
    assert isinstance(plain.model.encoder, DualEncoderConfig)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="unknown encoder kind 'clip'; encoder kinds: dual_encoder, hf_dual_encoder"):
        validate_job({**base, "model": {"kind": "fusion", "encoder": {"kind": "clip"}}}, "job.yaml")
    bad_key = {"kind": "hf_dual_encoder", "pretrained": "/x", "image": {"trainable": 1}}
    with pytest.raises(ConfigError, match=r"model.encoder.image: unknown key 'trainable' \(did you mean"):
        validate_job({**base, "model": {"kind": "fusion", "encoder": bad_key}}, "job.yaml")
