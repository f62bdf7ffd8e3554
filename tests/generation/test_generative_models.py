"""The generative models without Ray: sampling shapes and seeds, bundles that reload and generate the
same, the GAN's two steps leaving each other's gradients alone, and caption decoding (greedy, beam,
EOS, maximum length)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmray.artifacts.generators import Captioner, ImageGenerator
from mmray.artifacts.model_bundle import write_bundle
from mmray.config.generation import CaptionDecoderConfig, ConditionalGanConfig, ConditionalVaeConfig
from mmray.config.model import DualEncoderConfig
from mmray.errors import BundleError, ConfigError, QueryError
from mmray.models.caption_decoder import CaptionDecoder
from mmray.models.caption_search import beam_decode, greedy_decode, length_penalty
from mmray.models.conditional_gan import ConditionalGan
from mmray.models.registry import build_model, build_processor

TEXTS = [
    "a red circle on the left",
    "a big blue square at the top",
    "two shapes: a green triangle and a red circle",
    "a small yellow diamond in the bottom right corner",
]
ENCODER = DualEncoderConfig.model_validate(
    {
        "embed_dim": 16,
        "image": {"kind": "small_cnn", "image_size": 32, "width": 8, "blocks": 2},
        "text": {"kind": "small_transformer", "width": 16, "layers": 1, "heads": 2, "max_length": 12},
    }
)
VAE = ConditionalVaeConfig(encoder=ENCODER, latent_dim=4, width=8)
GAN = ConditionalGanConfig(encoder=ENCODER, noise_dim=4, width=8)
CAPTION = CaptionDecoderConfig(encoder=ENCODER, width=16, layers=2, heads=2)


def _bundle(config, directory: Path) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    processor = build_processor(config, TEXTS)
    model = build_model(config, processor)
    model.train()
    for module in model.modules():  # give batch-norm statistics something other than their defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    write_bundle(directory, model.eval(), config, processor)
    return directory


@pytest.mark.parametrize("config", [VAE, GAN], ids=["vae", "gan"])
def test_samples_have_the_image_shape_and_follow_the_seed(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    generator = ImageGenerator.open(str(_bundle(config, tmp_path / "bundle")))
    samples = generator.sample(TEXTS[:3], per_text=4, seed=5)
    assert samples.shape == (3, 4, 3, 32, 32)
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0
    assert torch.equal(samples, generator.sample(TEXTS[:3], per_text=4, seed=5))
    assert not torch.equal(samples, generator.sample(TEXTS[:3], per_text=4, seed=6))
    assert not torch.equal(samples[0, 0], samples[0, 1]), "samples of one caption get their own noise"
    steps = generator.interpolate(TEXTS[0], TEXTS[1], steps=5, seed=2)
    assert steps.shape == (5, 3, 32, 32)
    direct = generator.sample(TEXTS[:1], per_text=1, seed=2)[0, 0]
    assert torch.allclose(steps[0], direct, atol=1e-6), "the first step is the first caption, same noise"


@pytest.mark.parametrize("config", [VAE, GAN], ids=["vae", "gan"])
def test_a_generator_bundle_reloads_and_generates_identically(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = ImageGenerator.open(str(_bundle(config, tmp_path / "a")))
    copy = tmp_path / "b"
    write_bundle(copy, first.bundle.model, first.bundle.model_config, first.bundle.processor)
    second = ImageGenerator.open(str(copy))
    assert second.bundle.version == first.bundle.version
    assert torch.equal(first.sample(TEXTS, 2, seed=9), second.sample(TEXTS, 2, seed=9))


def test_generation_inputs_are_checked(tmp_path: Path) -> None:
    generator = ImageGenerator.open(str(_bundle(VAE, tmp_path / "vae")))
    caption = _bundle(CAPTION, tmp_path / "caption")
    with pytest.raises(QueryError, match="caption 2 is empty"):
        generator.sample(["a red circle", "  "], 2)
    with pytest.raises(QueryError, match="between 1 and 64"):
        generator.sample(["a red circle"], 0)
    for temperature in (0.0, -5.0, float("nan"), float("inf")):  # NaN drew blank images, -5 interpolated
        with pytest.raises(QueryError, match=r"temperature must be a finite number above 0"):
            generator.sample(["a red circle"], 2, temperature=temperature)
        with pytest.raises(QueryError, match=r"temperature must be a finite number above 0"):
            generator.interpolate("a red circle", "a blue square", 3, temperature=temperature)
    for seed in (-1, 2**64):
        with pytest.raises(QueryError, match=r"seed must lie in 0\.\.2\*\*63 - 1"):
            generator.sample(["a red circle"], 2, seed=seed)
    for device in ("bogus", *([] if torch.cuda.is_available() else ["cuda"])):
        with pytest.raises(ConfigError, match=rf"device '{device}'"):
            ImageGenerator.open(str(tmp_path / "vae"), device)
        with pytest.raises(ConfigError, match=rf"device '{device}'"):
            Captioner.open(str(caption), device)
    with pytest.raises(BundleError, match="does not generate images"):
        ImageGenerator.open(str(caption))
    with pytest.raises(BundleError, match="does not caption images"):
        Captioner.open(str(tmp_path / "vae"))


def test_gan_steps_leave_the_other_networks_gradients_alone() -> None:
    processor = build_processor(GAN, TEXTS)
    gan = build_model(GAN, processor)
    assert isinstance(gan, ConditionalGan)
    tokens = processor.tokenize(TEXTS)
    real, noise = torch.rand(4, 3, 32, 32), torch.randn(4, 4)
    scores = gan("discriminator", real, tokens.ids, tokens.mask, noise)
    (scores.real.mean() - scores.fake.mean()).backward()  # type: ignore[union-attr]
    assert all(p.grad is None for p in gan.generator.parameters())
    assert all(p.grad is not None for p in gan.discriminator.parameters())
    gan.zero_grad(set_to_none=True)
    gan("generator", real, tokens.ids, tokens.mask, noise).fake.mean().backward()
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.grad is not None for p in gan.generator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters()), "the discriminator trains again"
    assert all(p.grad is None for p in gan.encoder.parameters()), "the frozen text tower gets nothing"


def _decoder() -> tuple[CaptionDecoder, torch.Tensor]:
    torch.manual_seed(3)
    processor = build_processor(CAPTION, TEXTS)
    decoder = build_model(CAPTION, processor).eval()
    assert isinstance(decoder, CaptionDecoder)
    with torch.no_grad():  # spread the untrained logits, as training does, so no two tokens tie
        decoder.token_embedding.weight.normal_(std=1.0)
    images = processor.normalize(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8))
    return decoder, decoder.memory(images).detach()


def _sequence_score(decoder: CaptionDecoder, memory: torch.Tensor, ids: torch.Tensor, alpha: float) -> torch.Tensor:
    """Summed log-probability of each row's tokens up to its EOS, over the length penalty. -> (B,)"""
    log_probs = F.log_softmax(decoder.decode(memory, ids[:, :-1]).float(), dim=-1)
    picked = log_probs.gather(2, ids[:, 1:, None]).squeeze(2)  # (B, T - 1)
    real = ids[:, 1:] != decoder.pad_id
    return (picked * real).sum(dim=1) / length_penalty(real.sum(dim=1), alpha)


def test_beam_width_one_is_greedy_and_wider_beams_score_at_least_as_well() -> None:
    decoder, memory = _decoder()
    greedy = greedy_decode(decoder, memory, 12)
    one = beam_decode(decoder, memory, beam=1, alpha=0.6, max_length=12)
    assert torch.equal(greedy, one)
    wide = beam_decode(decoder, memory, beam=4, alpha=0.6, max_length=12)
    with torch.no_grad():
        width = max(wide.shape[1], greedy.shape[1])
        padded = [F.pad(ids, (0, width - ids.shape[1]), value=decoder.pad_id) for ids in (greedy, wide)]
        greedy_score, wide_score = (_sequence_score(decoder, memory, ids, 0.6) for ids in padded)
    assert bool((wide_score >= greedy_score - 1e-5).all())


@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_starts_with_bos_stops_at_eos_and_never_exceeds_the_maximum_length(beam: int) -> None:
    decoder, memory = _decoder()
    for limit in (2, 5, 12):
        ids = greedy_decode(decoder, memory, limit) if beam == 1 else beam_decode(decoder, memory, beam, 0.6, limit)
        assert ids.shape[1] <= limit
        assert bool((ids[:, 0] == decoder.bos_id).all())
        for row in ids.tolist():
            if decoder.eos_id in row:
                after = row[row.index(decoder.eos_id) + 1 :]
                assert all(token == decoder.pad_id for token in after)
    with torch.no_grad():  # make EOS the most likely token everywhere: every caption is BOS, EOS
        decoder.output.weight[decoder.eos_id] = 0.0
        bias = torch.full((decoder.output.out_features,), -50.0)
        bias[decoder.eos_id] = 50.0
        decoder.output.bias = torch.nn.Parameter(bias)
    ids = greedy_decode(decoder, memory, 12) if beam == 1 else beam_decode(decoder, memory, beam, 0.6, 12)
    assert ids.tolist() == [[decoder.bos_id, decoder.eos_id]] * memory.shape[0]


def test_a_caption_bundle_captions_images_like_the_model(tmp_path: Path) -> None:
    captioner = Captioner.open(str(_bundle(CAPTION, tmp_path / "caption")))
    images = [Image.new("RGB", (40, 40), color) for color in ("red", "blue")]
    greedy = captioner.caption(images)
    assert greedy == captioner.caption(images, beam=1) and len(greedy) == 2
    assert all(isinstance(text, str) for text in captioner.caption(images, beam=3, max_length=4))
    assert all(len(text.split()) <= 3 for text in captioner.caption(images, max_length=4))  # BOS + 3 tokens
    with pytest.raises(QueryError, match="beam must be between"):
        captioner.caption(images, beam=0)
    with pytest.raises(QueryError, match="max_length"):
        captioner.caption(images, max_length=1)
