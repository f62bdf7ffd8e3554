"""Pretrained CLIP and SigLIP pairs as mmray dual encoders: their embeddings, logits and loss equal
transformers' own for the same inputs through mmray's preprocessing, their processors follow the folder's
preprocessing, bundles rebuild them without the folder, and their towers freeze and decay by block."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, BertConfig

from mmray.artifacts.model_bundle import read_bundle, write_bundle
from mmray.config.model import HfDualEncoderConfig
from mmray.config.tasks import RetrievalTaskConfig
from mmray.config.training import InfoNceLossConfig, SigmoidLossConfig
from mmray.data.processor import Processor
from mmray.errors import ConfigError, WeightsError
from mmray.losses.representation import RepresentationLoss, freeze_unread_logit_parameters
from mmray.models.hf_towers import PretrainedDualEncoder
from mmray.models.registry import build_model, build_processor
from mmray.train.optimizers import layer_lr_scales, optimizer_for
from tests.support.tiny_pairs import IMAGE_SIZE, POSITIONS, write_tiny_clip, write_tiny_siglip

WRITERS = {"clip": write_tiny_clip, "siglip": write_tiny_siglip}
TEXTS = [
    "a small red circle in the top left corner",
    "two shapes: a big blue square and a little green triangle",
    "a photo of a diamond",
    "",
]


def _images(count: int) -> list[Image.Image]:
    """Photos of other sizes and aspects than the model's input, so resizing and cropping matter."""
    generator = np.random.default_rng(3)
    sizes = [(48, 40), (31, 77), (64, 64), (90, 50)]
    return [Image.fromarray(generator.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(count)]


def _pair(tmp_path: Path, family: str) -> tuple[Path, Processor, PretrainedDualEncoder]:
    folder = WRITERS[family](tmp_path / family)
    config = HfDualEncoderConfig(pretrained=str(folder))
    processor = build_processor(config)
    model = build_model(config, processor)
    assert isinstance(model, PretrainedDualEncoder)
    return folder, processor, model.eval()


def _inputs(processor: Processor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pixels = torch.stack([processor.pixels_from_pil(image) for image in _images(3)])  # (3, 3, S, S)
    batch = processor.tokenize(TEXTS)
    return processor.normalize(pixels), batch.ids, batch.mask


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_embeddings_and_logits_equal_transformers_and_survive_a_bundle(tmp_path: Path, family: str) -> None:
    folder, processor, model = _pair(tmp_path, family)
    images, ids, mask = _inputs(processor)
    reference = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        # CLIP's tokenizer gives an attention mask; SigLIP's does not (it was trained attending to its padding).
        attention = mask.long() if family == "clip" else None
        expected = reference(input_ids=ids, pixel_values=images, attention_mask=attention)
        image_vectors, text_vectors = model.embed_images(images), model.embed_texts(ids, mask)
        logits = model.logits(images, ids, mask)
    assert torch.allclose(image_vectors, expected.image_embeds, atol=1e-5, rtol=0)
    assert torch.allclose(text_vectors, expected.text_embeds, atol=1e-5, rtol=0)
    assert torch.allclose(logits, expected.logits_per_image, atol=1e-5, rtol=0)
    assert float(logits.std()) > 0.01, "the pair tells the images and texts apart"
    if family == "siglip":
        assert model.logit_bias is not None and model.logit_bias.item() == pytest.approx(-4.0)

    bundle_dir = tmp_path / "bundle"
    write_bundle(bundle_dir, model, HfDualEncoderConfig(pretrained=str(folder)), processor)
    shutil.rmtree(folder)
    bundle = read_bundle(bundle_dir)
    assert bundle.processor.fingerprint() == processor.fingerprint()
    rebuilt = bundle.model
    assert isinstance(rebuilt, PretrainedDualEncoder) and rebuilt.hf_config.model_type == family
    with torch.no_grad():
        assert torch.equal(rebuilt.embed_images(images), image_vectors)
        assert torch.equal(rebuilt.embed_texts(ids, mask), text_vectors)
        assert torch.equal(rebuilt.logits(images, ids, mask), logits)


def test_processors_follow_the_folders_preprocessing(tmp_path: Path) -> None:
    clip = build_processor(HfDualEncoderConfig(pretrained=str(write_tiny_clip(tmp_path / "clip"))))
    assert (clip.image.size, clip.image.resize) == (IMAGE_SIZE, "center_crop")
    assert clip.image.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert clip.tokenizer.max_length == POSITIONS, "the text tower's positions unless set"
    assert clip.tokenizer.bos_id == clip.tokenizer.tokenizer.bos_token_id

    siglip_folder = write_tiny_siglip(tmp_path / "siglip")
    siglip = build_processor(HfDualEncoderConfig(pretrained=str(siglip_folder)))
    assert (siglip.image.resize, siglip.image.mean, siglip.image.std) == ("stretch", (0.5,) * 3, (0.5,) * 3)
    ends = siglip.tokenize(["a red circle"])
    assert ends.ids[0, :4].tolist() == [*siglip.tokenizer.tokenizer("a red circle")["input_ids"]]
    assert siglip.tokenizer.bos_id == siglip.tokenizer.pad_id, "no start token: padding starts decoded texts"

    chosen = HfDualEncoderConfig(
        pretrained=str(siglip_folder), image={"resize": "center_crop", "mean": (0.1, 0.2, 0.3)}, text={"max_length": 16}
    )
    processor = build_processor(chosen)
    assert (processor.image.resize, processor.image.mean, processor.tokenizer.max_length) == (
        "center_crop",
        (0.1, 0.2, 0.3),
        16,
    )

    too_long = HfDualEncoderConfig(pretrained=str(siglip_folder), text={"max_length": 200})
    with pytest.raises(ConfigError, match="max_length is 200 but the text tower has 48 positions"):
        build_model(too_long, build_processor(too_long))


def test_folders_and_architectures_of_other_models_are_refused(tmp_path: Path) -> None:
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(ConfigError, match=r"holds a 'bert' model; hf_dual_encoder takes clip or siglip"):
        build_processor(HfDualEncoderConfig(pretrained=str(tmp_path / "bert")))
    with pytest.raises(ValueError, match=r"model_type must be one of \('clip', 'siglip'\), got 'bert'"):
        HfDualEncoderConfig(architecture={"model_type": "bert"})
    with pytest.raises(ValueError, match="needs pretrained"):
        HfDualEncoderConfig()


@pytest.mark.parametrize("content", ["{", "[]", '{"image_mean": 3}', '{"image_std": ["a", "b", "c"]}'])
def test_a_damaged_preprocessor_config_in_the_folder_is_named(tmp_path: Path, content: str) -> None:
    folder = write_tiny_clip(tmp_path / "clip")
    (folder / "preprocessor_config.json").write_text(content)
    named = rf"^{folder}/preprocessor_config\.json is damaged or not a Hugging Face image processor config"
    with pytest.raises(WeightsError, match=named):
        build_processor(HfDualEncoderConfig(pretrained=str(folder)))


def test_blocks_freeze_and_learn_at_decaying_rates(tmp_path: Path) -> None:
    folder = write_tiny_clip(tmp_path / "clip")
    config = HfDualEncoderConfig(pretrained=str(folder), image={"trainable_blocks": 1}, text={"trainable_blocks": 0})
    model = build_model(config, build_processor(config))
    assert isinstance(model, PretrainedDualEncoder)
    vision = model.image_encoder.model
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("text_encoder.") for name in trained), "text tower frozen"
    assert {"image_projection.weight", "text_projection.weight", "log_logit_scale"} <= trained
    assert all(not p.requires_grad for p in vision.encoder.layers[0].parameters())
    assert all(p.requires_grad for p in [*vision.encoder.layers[1].parameters(), *vision.post_layernorm.parameters()])
    assert all(not p.requires_grad for p in vision.embeddings.parameters())

    scales = layer_lr_scales(model, tower_lr_scale=0.5, layer_decay=0.1)
    expected = {
        "embeddings": 0.5 * 0.1**3,
        "pre_layrnorm": 0.5 * 0.1**3,
        "encoder.layers.0": 0.5 * 0.1**2,
        "encoder.layers.1": 0.5 * 0.1,
        "post_layernorm": 0.5,
    }
    for prefix, scale in expected.items():
        for parameter in vision.get_submodule(prefix).parameters():
            assert scales[id(parameter)] == pytest.approx(scale), prefix
    assert id(model.image_projection.weight) not in scales, "projections learn at the full lr"

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_for(trainable, 1e-3, 0.05, lr_scales=scales)
    by_lr: dict[float, set[int]] = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert sorted(by_lr, reverse=True) == pytest.approx([1e-3, 1e-3 * 0.5, 1e-3 * 0.05]), "frozen blocks: no group"
    assert by_lr[1e-3] == {id(p) for p in trainable} - {id(p) for p in vision.parameters()}


def test_sigmoid_loss_equals_siglips_own_and_needs_a_bias(tmp_path: Path) -> None:
    folder, processor, model = _pair(tmp_path, "siglip")
    images, ids, mask = _inputs(processor)
    images, ids, mask = images[:3], ids[:3], mask[:3]
    reference = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=images, return_loss=True).loss
        ours = RepresentationLoss(SigmoidLossConfig(kind="sigmoid"))(model(images, ids, mask)).loss
    assert float(ours) == pytest.approx(float(expected), abs=1e-5)

    assert model.logit_bias is not None
    freeze_unread_logit_parameters(model, RepresentationLoss(InfoNceLossConfig(kind="infonce")))
    assert model.log_logit_scale.requires_grad and not model.logit_bias.requires_grad, "InfoNCE reads no bias"

    clip = _pair(tmp_path, "clip")[2]
    sigmoid = RepresentationLoss(RetrievalTaskConfig(loss={"kind": "sigmoid"}).loss)
    with pytest.raises(ConfigError, match="needs a model with a logit bias"):
        freeze_unread_logit_parameters(clip, sigmoid)
