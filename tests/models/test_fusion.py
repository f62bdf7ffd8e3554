"""Fusion modules: output shapes, gradients into both towers, learned α in [0, 1], missing modalities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmray.config.fusion import (
    AttentionFusionConfig,
    ConcatFusionConfig,
    FusionModelConfig,
    GatedFusionConfig,
    HeadConfig,
    SingleModalityConfig,
    WeightedSumFusionConfig,
)
from mmray.config.model import DualEncoderConfig, SmallCnnConfig, SmallTransformerConfig
from mmray.data.processor import ImageTransform, Processor
from mmray.data.tokenizers import WordTokenizer
from mmray.errors import MissingModalityError
from mmray.models.fusion import FusionDims, GatedFusion, Modality, WeightedSumFusion, build_fusion, grid_positions
from mmray.models.fusion_model import FusionModel, build_fusion_model

FUSIONS = {
    "weighted_sum": WeightedSumFusionConfig(kind="weighted_sum"),
    "weighted_sum_learned": WeightedSumFusionConfig(kind="weighted_sum", learn_alpha=True),
    "concat": ConcatFusionConfig(kind="concat", hidden=24),
    "attention": AttentionFusionConfig(kind="attention", width=16, heads=2, layers=1),
    "gated": GatedFusionConfig(kind="gated", hidden=24),
}
DIMS = FusionDims(embed_dim=8, image_token_dim=12, text_token_dim=10)


def _processor() -> Processor:
    tokenizer = WordTokenizer.build(["a red circle", "is there a blue square on the left"], max_length=12)
    return Processor(ImageTransform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), tokenizer)


def _model(fusion_kind: str, heads: dict[str, int] | None = None) -> tuple[FusionModel, Processor]:
    processor = _processor()
    fusion = FUSIONS.get(fusion_kind) or SingleModalityConfig(kind=fusion_kind)  # type: ignore[arg-type]
    config = FusionModelConfig(
        encoder=DualEncoderConfig(
            embed_dim=8,
            image=SmallCnnConfig(kind="small_cnn", image_size=32, width=4, blocks=3),
            text=SmallTransformerConfig(kind="small_transformer", width=16, layers=1, heads=2, max_length=12),
        ),
        fusion=fusion,
        heads={name: HeadConfig(outputs=n, hidden=8) for name, n in (heads or {"answer": 3}).items()},
    )
    return build_fusion_model(config, processor), processor


def _inputs(processor: Processor, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.randn(batch, 3, 32, 32)
    tokens = processor.tokenize(["is there a red circle", "a blue square", "on the left", "a circle"][:batch])
    return images, tokens.ids, tokens.mask


def _modality(batch: int, tokens: int, dim: int) -> Modality:
    return Modality(
        F.normalize(torch.randn(batch, DIMS.embed_dim), dim=-1),
        torch.randn(batch, tokens, dim),
        torch.ones(batch, tokens, dtype=torch.bool),
    )


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_every_fusion_gives_one_vector_and_trains_both_towers(kind: str) -> None:
    torch.manual_seed(0)
    model, processor = _model(kind)
    output = model(*_inputs(processor))
    assert output.fused.shape == (4, model.fusion.out_dim)
    assert output.predictions["answer"].shape == (4, 3)
    output.predictions["answer"].pow(2).sum().backward()
    for tower in (model.encoder.image_encoder, model.encoder.text_encoder):
        grads = [p.grad for p in tower.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), (
            f"{kind}: every {type(tower).__name__} weight gets a gradient"
        )
        assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("kind", ["image_only", "text_only"])
def test_single_modality_baselines_freeze_the_other_tower(kind: str) -> None:
    model, processor = _model(kind)
    model(*_inputs(processor)).predictions["answer"].sum().backward()
    used, unused = (model.encoder.image_encoder, model.encoder.text_encoder)[:: 1 if kind == "image_only" else -1]
    assert all(p.grad is not None for p in used.parameters())
    assert not any(p.requires_grad for p in unused.parameters())


def test_weighted_sum_is_the_brief_formula() -> None:
    fusion = WeightedSumFusion(WeightedSumFusionConfig(kind="weighted_sum", alpha=0.3), DIMS)
    image, text = _modality(2, 3, 12), _modality(2, 5, 10)
    assert torch.allclose(fusion(image, text), 0.3 * image.embedding + 0.7 * text.embedding)


def test_learned_alpha_stays_within_zero_and_one() -> None:
    fusion = WeightedSumFusion(WeightedSumFusionConfig(kind="weighted_sum", alpha=0.9, learn_alpha=True), DIMS)
    optimizer = torch.optim.SGD(fusion.parameters(), lr=50.0)
    image, text = _modality(2, 3, 12), _modality(2, 5, 10)
    for target, expected in ((image.embedding, 1.0), (text.embedding, 0.0)):
        for _ in range(100):
            optimizer.zero_grad()
            (fusion(image, text) - target).pow(2).sum().backward()
            optimizer.step()
            assert 0.0 <= float(fusion.alpha.detach()) <= 1.0
        assert abs(float(fusion.alpha.detach()) - expected) < 0.05, "pulled to the image, then to the text"


@pytest.mark.parametrize("kind", ["weighted_sum", "gated"])
def test_sum_and_gated_fusion_use_the_present_modality(kind: str) -> None:
    fusion = build_fusion(FUSIONS[kind], DIMS)
    image, text = _modality(2, 3, 12), _modality(2, 5, 10)
    if isinstance(fusion, GatedFusion):
        assert torch.allclose(fusion(image, None), torch.tanh(fusion.image(fusion.scale * image.embedding)))
        assert torch.allclose(fusion(None, text), torch.tanh(fusion.text(fusion.scale * text.embedding)))
    else:
        assert torch.equal(fusion(image, None), image.embedding)
        assert torch.equal(fusion(None, text), text.embedding)


@pytest.mark.parametrize("kind", ["concat", "attention"])
def test_concat_and_attention_refuse_a_missing_modality(kind: str) -> None:
    model, processor = _model(kind)
    images, ids, mask = _inputs(processor)
    with pytest.raises(MissingModalityError, match="text input is missing"):
        model(images, None, None)
    with pytest.raises(MissingModalityError, match="image input is missing"):
        model(None, ids, mask)


def test_fusion_model_answers_from_one_modality_where_the_fusion_allows() -> None:
    model, processor = _model("gated")
    images, ids, mask = _inputs(processor)
    assert model(images).predictions["answer"].shape == (4, 3)
    assert model(None, ids, mask).embeddings is None


def test_grid_positions_distinguish_every_cell() -> None:
    positions = grid_positions(16, 8, torch.device("cpu"))
    assert positions.shape == (16, 8)
    assert torch.unique(positions, dim=0).shape[0] == 16
    with pytest.raises(ValueError, match="square grid"):
        grid_positions(12, 8, torch.device("cpu"))
