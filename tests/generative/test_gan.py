"""GAN losses, the WGAN-GP penalty, the recorded training step and its diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.generative.errors import GenerativeError
from netarchitect.generative.gan import (
    GANTrainer,
    discriminator_loss,
    gan_diagnostics,
    generator_loss,
    gradient_penalty,
)

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.25, 1.5])


def _sp(v: float) -> float:
    return math.log1p(math.exp(v))


def test_discriminator_losses_by_hand() -> None:
    ns = (sum(_sp(-r) for r in REAL.tolist()) + sum(_sp(f) for f in FAKE.tolist())) / 3
    hinge = (sum(max(0, 1 - r) for r in REAL.tolist())
             + sum(max(0, 1 + f) for f in FAKE.tolist())) / 3
    wgan = FAKE.mean() - REAL.mean()
    torch.testing.assert_close(discriminator_loss(REAL, FAKE), torch.tensor(ns))
    torch.testing.assert_close(discriminator_loss(REAL, FAKE, "hinge"), torch.tensor(hinge))
    torch.testing.assert_close(discriminator_loss(REAL, FAKE, "wgan_gp"), wgan)
    # the non-saturating D loss is the BCE of a real/fake classifier
    bce = F.binary_cross_entropy_with_logits(torch.cat([REAL, FAKE]),
                                             torch.cat([torch.ones(3), torch.zeros(3)]))
    torch.testing.assert_close(discriminator_loss(REAL, FAKE), 2 * bce)


def test_generator_losses_by_hand() -> None:
    ns = sum(_sp(-f) for f in FAKE.tolist()) / 3
    torch.testing.assert_close(generator_loss(FAKE), torch.tensor(ns))
    torch.testing.assert_close(generator_loss(FAKE, "hinge"), -FAKE.mean())
    torch.testing.assert_close(generator_loss(FAKE, "wgan_gp"), -FAKE.mean())
    with pytest.raises(GenerativeError, match="loss='lsgan'"):
        generator_loss(FAKE, "lsgan")
    with pytest.raises(GenerativeError, match="loss="):
        discriminator_loss(REAL, FAKE, "minimax")


def test_gradient_penalty_by_hand() -> None:
    # a linear critic D(x) = w·x has gradient w everywhere: GP = (|w| - 1)^2
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    torch.testing.assert_close(gradient_penalty(lin, real, fake), torch.tensor(16.0))
    # D(x) = sum(x^2): gradient 2 x_hat at x_hat = a real + (1 - a) fake
    real, fake = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, -2.0]])
    alpha = torch.tensor([0.5, 0.25])

    def quad(x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).sum(1)

    x_hat = torch.tensor([[0.5, 0.0], [0.0, -1.0]])
    hand = ((2 * x_hat).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(gradient_penalty(quad, real, fake, alpha=alpha), hand)
    # images: the norm is over all of a sample's features; the penalty is differentiable
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 2 * 2, 1))
    gp = gradient_penalty(conv, torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4),
                          generator=torch.Generator().manual_seed(0))
    gp.backward()
    assert conv[0].weight.grad is not None and conv[3].weight.grad is not None
    with pytest.raises(GenerativeError, match="differ in shape"):
        gradient_penalty(lin, torch.randn(2, 2), torch.randn(3, 2))


def _tiny_gan(width: int = 16) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))
    d = nn.Sequential(nn.Linear(2, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))
    return g, d


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wgan_gp"])
def test_trainer_records_every_step(loss: str) -> None:
    g, d = _tiny_gan()
    trainer = GANTrainer(g, d, loss=loss, latent_dim=2, d_steps=2, lr=1e-3)
    before = [p.detach().clone() for p in g.parameters()]
    history = trainer.fit(torch.randn(64, 2), steps=3, batch_size=8)
    assert len(history) == 3 and [h["step"] for h in history] == [0, 1, 2]
    keys = {"d_loss", "g_loss", "d_real", "d_fake", "d_acc", "d_grad_norm", "g_grad_norm",
            "real_spread", "fake_spread"}
    assert keys <= set(history[-1])
    assert ("gp" in history[-1]) == (loss == "wgan_gp")
    assert all(0 <= h["d_acc"] <= 1 and h["d_grad_norm"] > 0 and h["g_grad_norm"] > 0
               for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True))
    assert trainer.sample(5).shape == (5, 2) and not g.training


def test_trainer_is_seeded_and_checks_arguments() -> None:
    runs = []
    for _ in range(2):
        g, d = _tiny_gan()
        runs.append(GANTrainer(g, d, latent_dim=2, seed=3).fit(torch.ones(8, 2), 2, 4))
    assert runs[0] == runs[1]
    g, d = _tiny_gan()
    with pytest.raises(GenerativeError, match="latent_dim"):
        GANTrainer(g, d)
    with pytest.raises(GenerativeError, match="d_steps"):
        GANTrainer(g, d, latent_dim=2, d_steps=0)
    with pytest.raises(GenerativeError, match="gp_weight"):
        GANTrainer(g, d, latent_dim=2, gp_weight=-1.0)
    trainer = GANTrainer(g, d, latent_dim=2, lr=1e-3)
    trainer.set_lr(5e-4)
    assert trainer.g_optimizer.param_groups[0]["lr"] == trainer.d_optimizer.param_groups[0]["lr"] == 5e-4
    with pytest.raises(GenerativeError, match="lr"):
        trainer.set_lr(-1.0)
    with pytest.raises(GenerativeError, match="batch_size"):
        GANTrainer(g, d, latent_dim=2).fit(torch.ones(8, 2), 1, 0)


def _history(n: int, **values: float) -> list[dict[str, float]]:
    base = {"d_acc": 0.6, "real_spread": 1.4, "fake_spread": 1.3, "g_grad_norm": 2.0}
    return [{**base, **values, "step": float(i)} for i in range(n)]


def test_diagnostics_healthy_and_empty() -> None:
    assert gan_diagnostics([]) == []
    assert gan_diagnostics(_history(100)) == []


def test_diagnostics_flag_a_collapsed_generator() -> None:
    g, d = _tiny_gan()
    with torch.no_grad():  # a constant generator: every latent maps to one point
        g[2].weight.zero_()
    for p in g.parameters():
        p.requires_grad_(False)
    g.register_parameter("dummy", nn.Parameter(torch.zeros(1)))
    trainer = GANTrainer(g, d, latent_dim=2, lr=0.0)
    trainer.fit(torch.randn(256, 2), steps=5, batch_size=32)
    flags = gan_diagnostics(trainer.history, window=5)
    assert [f.name for f in flags] == ["mode_collapse"]
    assert "collapsed" in flags[0].message and flags[0].suggestions


def test_diagnostics_flag_an_overpowering_discriminator() -> None:
    flags = gan_diagnostics(_history(60, d_acc=1.0), window=20)
    assert [f.name for f in flags] == ["discriminator_overpowering"]
    # or: the generator's gradient vanished compared with the first steps
    hist = _history(40) + _history(40, g_grad_norm=1e-4)
    flags = gan_diagnostics(hist, window=20)
    assert [f.name for f in flags] == ["discriminator_overpowering"]
    assert "G gradient norm" in flags[0].message
    with pytest.raises(GenerativeError, match="window"):
        gan_diagnostics(hist, window=0)
