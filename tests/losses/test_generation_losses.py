"""The VAE and GAN loss terms against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmray.losses.generation import (
    discriminator_loss,
    gaussian_kl,
    generator_loss,
    kl_weight,
    reconstruction_error,
    vae_terms,
)


def test_gaussian_kl_matches_the_closed_form() -> None:
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 0: 0.5·[(1 + 1 − 1 − 0) + (0 + 2 − 1 − ln 2)] = 0.5·(2 − ln 2); row 1: N(0, I) itself
    assert gaussian_kl(mu, logvar).tolist() == pytest.approx([0.5 * (2.0 - math.log(2.0)), 0.0])


def test_reconstruction_errors_are_summed_per_image() -> None:
    logits = torch.full((2, 3, 1, 2), math.log(3.0))  # sigmoid = 0.75 everywhere
    target = torch.zeros(2, 3, 1, 2)
    target[0] = 1.0
    bce = reconstruction_error(logits, target, "bce")
    assert bce.tolist() == pytest.approx([6 * -math.log(0.75), 6 * -math.log(0.25)])
    mse = reconstruction_error(logits, target, "mse")
    assert mse.tolist() == pytest.approx([6 * 0.25**2, 6 * 0.75**2])


def test_vae_loss_is_the_batch_mean_of_reconstruction_plus_beta_kl() -> None:
    logits = torch.zeros(2, 3, 2, 2)  # sigmoid = 0.5: BCE ln 2 per pixel whatever the target
    target = torch.rand(2, 3, 2, 2)
    mu = torch.tensor([[1.0], [3.0]])
    logvar = torch.zeros(2, 1)
    terms = vae_terms(logits, target, mu, logvar, "bce")
    assert float(terms.reconstruction) == pytest.approx(12 * math.log(2.0), rel=1e-5)
    assert float(terms.kl) == pytest.approx((0.5 + 4.5) / 2)
    assert float(terms.loss(0.5)) == pytest.approx(12 * math.log(2.0) + 0.5 * 2.5, rel=1e-5)


def test_kl_weight_warms_up_linearly_then_holds() -> None:
    assert kl_weight(2.0, 0, 10) == 0.0
    assert kl_weight(2.0, 5, 10) == 1.0
    assert kl_weight(2.0, 50, 10) == 2.0
    assert kl_weight(2.0, 0, 0) == 2.0


def test_adversarial_losses() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # hinge: mean(relu(1 − real)) + mean(relu(1 + fake)) = 0.5 + 0.75; generator: −mean(fake)
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(1.25)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(0.75)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (softplus(-2.0) + softplus(0.0)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2
    assert float(discriminator_loss(real, fake, "non_saturating")) == pytest.approx(expected)
    assert float(generator_loss(fake, "non_saturating")) == pytest.approx((softplus(2.0) + softplus(-0.5)) / 2)
