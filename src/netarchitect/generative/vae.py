"""VAE arithmetic: reparameterisation, the analytic Gaussian KL, Bernoulli and Gaussian
log-likelihoods, the ELBO (and the β-VAE objective), and the importance-weighted bound.

With ``q(z | x) = N(μ, diag σ²)`` and the prior ``p(z) = N(0, I)``::

    ELBO(x)  = E_q[log p(x | z)] - KL(q(z | x) ‖ p(z))                  (Kingma & Welling, 2014)
    β-VAE    = E_q[log p(x | z)] - β · KL                               (Higgins et al., 2017)
    IWAE_k(x) = E[log (1/k) Σᵢ p(x | zᵢ) p(zᵢ) / q(zᵢ | x)],  zᵢ ~ q     (Burda et al., 2016)

``IWAE_1`` is the ELBO (its one-sample estimate uses the Monte-Carlo KL), and ``IWAE_k``
rises with ``k`` towards ``log p(x)``: the evaluation's log-likelihood estimate.

The model is anything with ``encode(x) -> (mean, logvar)`` and ``decoder_output(z)`` (logits
of a Bernoulli or the mean of a Gaussian ``p(x | z)``), as
:class:`~netarchitect.models.vae.VAENetwork`. All terms are in nats per sample, summed over
the data and latent dimensions.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import GenerativeError

__all__ = [
    "ELBOTerms",
    "bernoulli_log_likelihood",
    "elbo",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "gaussian_log_prob",
    "iwae_bound",
    "log_likelihood",
    "reparameterize",
    "vae_loss",
]

_LOG_2PI = math.log(2 * math.pi)


class ELBOTerms(NamedTuple):
    """Per-sample terms ``(B,)``: ``elbo = log_likelihood - kl`` (β = 1)."""

    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor


def _sum_features(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1) if t.ndim > 1 else t


def reparameterize(
    mean: Tensor,
    logvar: Tensor,
    *,
    noise: Tensor | None = None,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``z = mean + exp(logvar / 2) · ε``: differentiable in ``mean`` and ``logvar``.

    ``ε`` is ``noise`` when given, else ``N(0, I)`` drawn with ``generator``: ``(B, L)``, or
    ``(num_samples, B, L)`` with ``num_samples``.
    """
    if noise is None:
        shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
        if num_samples is not None and num_samples < 1:
            raise GenerativeError(f"num_samples={num_samples} must be >= 1")
        noise = torch.randn(shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + (0.5 * logvar).exp() * noise


def gaussian_kl(
    mean: Tensor,
    logvar: Tensor,
    prior_mean: Tensor | float = 0.0,
    prior_logvar: Tensor | float = 0.0,
) -> Tensor:
    """``KL(N(mean, e^logvar) ‖ N(prior_mean, e^prior_logvar))`` summed over all but the
    batch dim (default prior ``N(0, I)``)::

        ½ Σ [ (σ² + (μ - μₚ)²) / σₚ² - 1 + log σₚ² - log σ² ]

    Shapes:
        ``(B, L)`` -> ``(B,)``.
    """
    prior_logvar = torch.as_tensor(prior_logvar, dtype=mean.dtype, device=mean.device)
    ratio = (logvar - prior_logvar).exp()
    kl = 0.5 * (ratio + (mean - prior_mean).pow(2) / prior_logvar.exp() - 1 - logvar + prior_logvar)
    return _sum_features(kl)


def gaussian_log_prob(z: Tensor, mean: Tensor | float = 0.0, logvar: Tensor | float = 0.0) -> Tensor:
    """``log N(z; mean, diag e^logvar)`` summed over the last dim: ``(..., L) -> (...)``."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + _LOG_2PI).sum(-1)


def _check_unit_interval(x: Tensor) -> None:
    if x.device.type != "meta" and x.numel() and bool((x < 0).any() or (x > 1).any()):
        raise GenerativeError(
            f"x must lie in [0, 1] for a Bernoulli likelihood, got values in "
            f"[{x.min().item():.3g}, {x.max().item():.3g}] (rescale, e.g. (x + 1) / 2)"
        )


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """``log p(x | logits) = Σ x log σ(l) + (1 - x) log(1 - σ(l))`` per sample, for ``x`` in
    ``[0, 1]`` (binary, or grey levels as the usual relaxation).

    Shapes:
        logits, x: ``(B, ...)`` -> ``(B,)``.
    """
    _check_unit_interval(x)
    return -_sum_features(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def gaussian_log_likelihood(mean: Tensor, x: Tensor, *, obs_std: float = 1.0) -> Tensor:
    """``log N(x; mean, obs_std² I)`` per sample.

    Shapes:
        mean, x: ``(B, ...)`` -> ``(B,)``.
    """
    if isinstance(obs_std, bool) or not isinstance(obs_std, (int, float)) or not obs_std > 0:
        raise GenerativeError(f"obs_std={obs_std!r} must be a positive number")
    log_p = -0.5 * ((x - mean) / obs_std).pow(2) - math.log(obs_std) - 0.5 * _LOG_2PI
    return _sum_features(log_p)


def log_likelihood(output: Tensor, x: Tensor, likelihood: str, *, obs_std: float = 1.0) -> Tensor:
    """``log p(x | z)`` per sample from the decoder's ``output`` (``"bernoulli"`` logits or
    ``"gaussian"`` mean)."""
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(output, x)
    if likelihood == "gaussian":
        return gaussian_log_likelihood(output, x, obs_std=obs_std)
    raise GenerativeError(f"likelihood={likelihood!r} must be 'bernoulli' or 'gaussian'")


def _likelihood(model: Any, likelihood: str | None) -> str:
    return likelihood or str(getattr(model, "likelihood", "bernoulli"))


def elbo(
    model: Any,
    x: Tensor,
    *,
    likelihood: str | None = None,
    obs_std: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ELBOTerms:
    """One-sample ELBO terms per sample: ``log p(x | z)`` for a reparameterised ``z ~ q(z | x)``
    (``noise`` fixes ``ε``) and the analytic KL to ``N(0, I)``. ``likelihood`` defaults to
    ``model.likelihood``."""
    mean, logvar = model.encode(x)
    z = reparameterize(mean, logvar, noise=noise, generator=generator)
    ll = log_likelihood(model.decoder_output(z), x, _likelihood(model, likelihood), obs_std=obs_std)
    kl = gaussian_kl(mean, logvar)
    return ELBOTerms(ll - kl, ll, kl)


def vae_loss(
    model: Any,
    x: Tensor,
    *,
    beta: float = 1.0,
    likelihood: str | None = None,
    obs_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The (β-)VAE loss to minimise: ``-mean_B(log p(x | z) - β · KL)`` (``β = 1``: the
    negative ELBO; ``β > 1``: Higgins et al.'s disentangling pressure; ``β < 1``: sharper
    reconstructions, e.g. annealed from 0)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
        raise GenerativeError(f"beta={beta!r} must be a number >= 0")
    terms = elbo(model, x, likelihood=likelihood, obs_std=obs_std, generator=generator)
    return -(terms.log_likelihood - beta * terms.kl).mean()


def iwae_bound(
    model: Any,
    x: Tensor,
    k: int = 64,
    *,
    likelihood: str | None = None,
    obs_std: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 64,
) -> Tensor:
    """The importance-weighted estimate of ``log p(x)`` with ``k`` samples (Burda et al.)::

        log (1/k) Σᵢ exp(log p(x | zᵢ) + log p(zᵢ) - log q(zᵢ | x)),   zᵢ ~ q(z | x)

    A lower bound in expectation that tightens as ``k`` grows. ``noise`` ``(k, B, L)`` fixes
    the ``ε``'s; the decoder runs on ``chunk`` samples of each ``x`` at a time.

    Shapes:
        x: ``(B, ...)`` -> ``(B,)``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GenerativeError(f"k={k!r} must be an integer >= 1 (importance samples)")
    if chunk < 1:
        raise GenerativeError(f"chunk={chunk!r} must be >= 1")
    kind = _likelihood(model, likelihood)
    mean, logvar = model.encode(x)
    if noise is not None and noise.shape != (k, *mean.shape):
        raise GenerativeError(
            f"noise has shape {tuple(noise.shape)}: expected (k, B, L) = {(k, *mean.shape)}"
        )
    z = reparameterize(mean, logvar, noise=noise, num_samples=None if noise is not None else k,
                       generator=generator)  # (k, B, L)
    log_w = []
    for zc in z.split(chunk):
        n = zc.shape[0]
        out = model.decoder_output(zc.reshape(n * x.shape[0], -1))  # (n·B, ...)
        xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:])
        ll = log_likelihood(out, xs, kind, obs_std=obs_std).reshape(n, x.shape[0])
        log_w.append(ll + gaussian_log_prob(zc) - gaussian_log_prob(zc, mean, logvar))
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)
