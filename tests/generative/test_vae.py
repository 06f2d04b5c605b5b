"""VAE arithmetic: KL, likelihoods, ELBO, β-VAE loss and the importance-weighted bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from netarchitect.generative.errors import GenerativeError
from netarchitect.generative.vae import (
    bernoulli_log_likelihood,
    elbo,
    gaussian_kl,
    gaussian_log_likelihood,
    gaussian_log_prob,
    iwae_bound,
    log_likelihood,
    reparameterize,
    vae_loss,
)


class TinyVAE(nn.Module):
    """A hand-made linear VAE: encode/decoder_output as VAENetwork's."""

    likelihood = "gaussian"

    def __init__(self, d: int = 3, latent: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc = nn.Linear(d, 2 * latent)
        self.dec = nn.Linear(latent, d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))

    def encode(self, x):
        mean, logvar = self.enc(x).chunk(2, -1)
        return mean, logvar

    def decoder_output(self, z):
        return self.dec(z)


def test_kl_matches_monte_carlo() -> None:
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.5
    pm, plv = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.3
    z = reparameterize(mean.double(), logvar.double(), num_samples=100_000, generator=g)
    mc = (gaussian_log_prob(z, mean.double(), logvar.double())
          - gaussian_log_prob(z, pm.double(), plv.double())).mean(0)
    torch.testing.assert_close(gaussian_kl(mean, logvar, pm, plv), mc.float(), atol=0.02, rtol=0.01)
    # the standard-normal prior by default, and the closed form by hand
    m, lv = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(4.0)]])
    hand = 0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - math.log(4.0)))
    torch.testing.assert_close(gaussian_kl(m, lv), torch.tensor([hand]))
    assert gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0


def test_reparameterize_given_noise_and_gradients() -> None:
    mean = torch.tensor([[1.0, 2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(9.0)]], requires_grad=True)
    z = reparameterize(mean, logvar, noise=torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(z, torch.tensor([[2.0, -1.0]]))
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(1, 2))
    torch.testing.assert_close(logvar.grad, torch.tensor([[0.5, -1.5]]))
    assert reparameterize(mean, logvar, num_samples=5).shape == (5, 1, 2)
    with pytest.raises(GenerativeError, match="num_samples"):
        reparameterize(mean, logvar, num_samples=0)


def test_likelihoods_by_hand() -> None:
    logits, x = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.25]])
    s = torch.sigmoid(torch.tensor(2.0))
    hand = math.log(0.5) + 0.25 * math.log(s) + 0.75 * math.log(1 - s)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), torch.tensor([hand]))
    mean, x = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 1.0]])
    hand = -0.5 * (0.5 / 0.5) ** 2 - 2 * (math.log(0.5) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(gaussian_log_likelihood(mean, x, obs_std=0.5), torch.tensor([hand]))
    torch.testing.assert_close(log_likelihood(mean, x, "gaussian", obs_std=0.5), torch.tensor([hand]))
    torch.testing.assert_close(log_likelihood(logits, torch.ones(1, 2), "bernoulli"),
                               bernoulli_log_likelihood(logits, torch.ones(1, 2)))
    with pytest.raises(GenerativeError, match=r"\[0, 1\]"):
        bernoulli_log_likelihood(logits, torch.tensor([[-1.0, 0.5]]))
    with pytest.raises(GenerativeError, match="obs_std"):
        gaussian_log_likelihood(mean, x, obs_std=0)
    with pytest.raises(GenerativeError, match="likelihood"):
        log_likelihood(mean, x, "poisson")


def test_elbo_pieces_and_beta_loss() -> None:
    model, x = TinyVAE(), torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    terms = elbo(model, x, noise=noise, obs_std=0.7)
    mean, logvar = model.encode(x)
    z = mean + (0.5 * logvar).exp() * noise
    ll = gaussian_log_likelihood(model.dec(z), x, obs_std=0.7)
    torch.testing.assert_close(terms.log_likelihood, ll)
    torch.testing.assert_close(terms.kl, gaussian_kl(mean, logvar))
    torch.testing.assert_close(terms.elbo, ll - terms.kl)
    g = torch.Generator()
    l0 = vae_loss(model, x, beta=0.0, generator=g.manual_seed(5))
    l1 = vae_loss(model, x, beta=1.0, generator=g.manual_seed(5))
    l3 = vae_loss(model, x, beta=3.0, generator=g.manual_seed(5))
    kl = gaussian_kl(mean, logvar).mean()
    torch.testing.assert_close(l1 - l0, kl)
    torch.testing.assert_close(l3 - l0, 3 * kl)
    with pytest.raises(GenerativeError, match="beta"):
        vae_loss(model, x, beta=-1)


def test_iwae_k1_is_the_one_sample_elbo_estimate() -> None:
    model, x = TinyVAE(), torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(1, 5, 2, generator=torch.Generator().manual_seed(6))
    mean, logvar = model.encode(x)
    z = mean + (0.5 * logvar).exp() * noise[0]
    expected = (gaussian_log_likelihood(model.dec(z), x) + gaussian_log_prob(z)
                - gaussian_log_prob(z, mean, logvar))
    torch.testing.assert_close(iwae_bound(model, x, 1, noise=noise), expected)
    # averaged over many draws, IWAE_1 is the analytic-KL ELBO
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        mc = iwae_bound(model, x.repeat(4000, 1), 1, generator=g).reshape(4000, 5).mean(0)
        torch.testing.assert_close(mc, elbo(model, x, generator=g).kl.neg() + _expected_ll(model, x),
                                   atol=0.1, rtol=0.02)


def _expected_ll(model: TinyVAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log N(x; Wz + b, I)] in closed form for the linear decoder."""
    mean, logvar = model.encode(x)
    w = model.dec.weight
    resid = x - model.dec(mean)
    trace = (w.pow(2) * logvar.exp().unsqueeze(1)).sum(-1).sum(-1)  # tr(W Σ Wᵀ)
    d = x.shape[1]
    return -0.5 * (resid.pow(2).sum(-1) + trace) - 0.5 * d * math.log(2 * math.pi)


def test_iwae_increases_with_k() -> None:
    model, x = TinyVAE(), torch.randn(6, 3, generator=torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        xs = x.repeat(200, 1)  # 200 independent estimates per x
        means = [iwae_bound(model, xs, k, generator=g, chunk=7).mean() for k in (1, 5, 50)]
    assert means[0] < means[1] < means[2]
    # the exact marginal of the linear-Gaussian model bounds them all
    w, b = model.dec.weight, model.dec.bias
    cov = w @ w.T + torch.eye(3)
    exact = torch.distributions.MultivariateNormal(b, cov).log_prob(x).mean()
    assert means[2] <= exact + 0.01


def test_iwae_bad_arguments() -> None:
    model, x = TinyVAE(), torch.randn(2, 3)
    with pytest.raises(GenerativeError, match="k=0"):
        iwae_bound(model, x, 0)
    with pytest.raises(GenerativeError, match="chunk"):
        iwae_bound(model, x, 2, chunk=0)
    with pytest.raises(GenerativeError, match="noise"):
        iwae_bound(model, x, 2, noise=torch.zeros(3, 2, 2))
