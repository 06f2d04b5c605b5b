"""GAN losses, the WGAN-GP gradient penalty, a recorded training step and its diagnostics.

With discriminator logits (critic values) ``r = D(x)`` on real and ``f = D(G(z))`` on fake
samples (all means over the batch):

=====================  ===================================  ============================
``loss``               discriminator                         generator
=====================  ===================================  ============================
``non_saturating``     ``softplus(-r) + softplus(f)``        ``softplus(-f)``
                       (Goodfellow et al., 2014)
``hinge``              ``relu(1 - r) + relu(1 + f)``         ``-f`` (Lim & Ye; Miyato)
``wgan_gp``            ``f - r + λ · GP`` (Gulrajani et al.)  ``-f``
=====================  ===================================  ============================

``GP = E[(‖∇ D(x̂)‖₂ - 1)²]`` at ``x̂ = α x + (1 - α) G(z)``, ``α ~ U(0, 1)`` per sample.

:class:`GANTrainer` alternates ``d_steps`` discriminator updates and one generator update
and records, per step, both losses, the discriminator's accuracy, the gradient norms and the
spread of real and fake samples; :func:`gan_diagnostics` reads such a history and flags mode
collapse and an overpowering discriminator (as :class:`~netarchitect.analysis.doctor.Flag`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analysis.doctor import Flag
from .errors import GenerativeError

__all__ = [
    "GAN_LOSSES",
    "GANTrainer",
    "discriminator_loss",
    "gan_diagnostics",
    "generator_loss",
    "gradient_penalty",
]

GAN_LOSSES = ("non_saturating", "hinge", "wgan_gp")


def _check_loss(loss: str) -> None:
    if loss not in GAN_LOSSES:
        raise GenerativeError(f"loss={loss!r} must be one of {GAN_LOSSES}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, loss: str = "non_saturating") -> Tensor:
    """The discriminator's (critic's) loss, without the gradient penalty (table above)."""
    _check_loss(loss)
    if loss == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def generator_loss(fake_logits: Tensor, loss: str = "non_saturating") -> Tensor:
    """The generator's loss on the discriminator's logits of its samples (table above)."""
    _check_loss(loss)
    if loss == "non_saturating":
        return F.softplus(-fake_logits).mean()
    return -fake_logits.mean()


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    alpha: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's ``E[(‖∇ₓ D(x̂)‖₂ - 1)²]`` at ``x̂ = α real + (1 - α) fake`` (differentiable:
    the graph is kept for the discriminator's update). ``alpha`` ``(B,)`` defaults to
    ``U(0, 1)`` draws with ``generator``.

    Shapes:
        real, fake: ``(B, ...)`` -> scalar.
    """
    if real.shape != fake.shape:
        raise GenerativeError(
            f"real {tuple(real.shape)} and fake {tuple(fake.shape)} samples differ in shape"
        )
    if alpha is None:
        alpha = torch.rand(real.shape[0], generator=generator).to(real)
    alpha = alpha.reshape(-1, *([1] * (real.ndim - 1)))
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def _spread(x: Tensor) -> float:
    """Mean per-feature standard deviation across the batch."""
    return float(x.detach().flatten(1).float().std(0).mean()) if x.shape[0] > 1 else 0.0


class GANTrainer:
    """Trains ``generator`` against ``discriminator`` with ``loss`` (``non_saturating``,
    ``hinge`` or ``wgan_gp``): per :meth:`step`, ``d_steps`` discriminator updates on the
    given real batch, then one generator update.

    Adam with ``lr`` and ``betas`` unless optimisers are given. Latents are
    ``N(0, I)`` of ``latent_dim`` (default ``generator.latent_dim``) drawn from a generator
    seeded with ``seed``. Each step appends to :attr:`history` a dict with ``d_loss``,
    ``g_loss``, ``gp`` (WGAN-GP), ``d_real`` / ``d_fake`` (mean logits), ``d_acc`` (the
    fraction of real logits above and fake logits below the threshold: 0, or their midpoint
    for the WGAN critic), ``d_grad_norm`` / ``g_grad_norm`` (before the optimiser steps),
    ``real_spread`` / ``fake_spread`` (mean per-feature standard deviation in the batch).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        loss: str = "non_saturating",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        d_steps: int = 1,
        gp_weight: float = 10.0,
        latent_dim: int | None = None,
        g_optimizer: torch.optim.Optimizer | None = None,
        d_optimizer: torch.optim.Optimizer | None = None,
        seed: int | None = 0,
    ) -> None:
        _check_loss(loss)
        if isinstance(d_steps, bool) or not isinstance(d_steps, int) or d_steps < 1:
            raise GenerativeError(f"d_steps={d_steps!r} must be an integer >= 1")
        if not gp_weight >= 0:
            raise GenerativeError(f"gp_weight={gp_weight!r} must be >= 0")
        latent_dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise GenerativeError(
                f"latent_dim={latent_dim!r}: pass a positive latent size for this generator"
            )
        self.generator, self.discriminator = generator, discriminator
        self.loss, self.d_steps, self.gp_weight, self.latent_dim = loss, d_steps, gp_weight, latent_dim
        self.g_optimizer = g_optimizer or torch.optim.Adam(generator.parameters(), lr, betas=betas)
        self.d_optimizer = d_optimizer or torch.optim.Adam(discriminator.parameters(), lr,
                                                           betas=betas)
        self.rng = torch.Generator()
        if seed is not None:
            self.rng.manual_seed(seed)
        self.history: list[dict[str, float]] = []

    def latents(self, n: int) -> Tensor:
        """``n`` latent vectors on the generator's device and dtype."""
        ref = next(self.generator.parameters())
        z = torch.randn(n, self.latent_dim, generator=self.rng)
        return z.to(device=ref.device, dtype=ref.dtype)

    def _d_update(self, real: Tensor) -> dict[str, float]:
        with torch.no_grad():
            fake = self.generator(self.latents(real.shape[0]))
        real_logits = self.discriminator(real).reshape(-1)
        fake_logits = self.discriminator(fake).reshape(-1)
        d_loss = discriminator_loss(real_logits, fake_logits, self.loss)
        record: dict[str, float] = {}
        if self.loss == "wgan_gp":
            gp = gradient_penalty(self.discriminator, real, fake, generator=self.rng)
            d_loss = d_loss + self.gp_weight * gp
            record["gp"] = float(gp.detach())
            threshold = float((real_logits.mean() + fake_logits.mean()).detach() / 2)
        else:
            threshold = 0.0
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        record["d_grad_norm"] = _grad_norm(self.discriminator)
        self.d_optimizer.step()
        real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
        correct = (real_logits > threshold).float().sum() + (fake_logits < threshold).float().sum()
        record.update(
            d_loss=float(d_loss.detach()),
            d_real=float(real_logits.mean()),
            d_fake=float(fake_logits.mean()),
            d_acc=float(correct) / (2 * real.shape[0]),
            real_spread=_spread(real),
            fake_spread=_spread(fake),
        )
        return record

    def step(self, real: Tensor) -> dict[str, float]:
        """One training step on the real batch ``real``; returns (and records) its metrics."""
        self.generator.train()
        self.discriminator.train()
        for _ in range(self.d_steps):
            record = self._d_update(real)
        fake = self.generator(self.latents(real.shape[0]))
        g_loss = generator_loss(self.discriminator(fake).reshape(-1), self.loss)
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        record["g_grad_norm"] = _grad_norm(self.generator)
        self.g_optimizer.step()
        self.d_optimizer.zero_grad(set_to_none=True)  # the G step left D grads behind
        record.update(step=float(len(self.history)), g_loss=float(g_loss.detach()))
        self.history.append(record)
        return record

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of both optimisers (a schedule's step)."""
        if not lr >= 0:
            raise GenerativeError(f"lr={lr!r} must be >= 0")
        for opt in (self.g_optimizer, self.d_optimizer):
            for group in opt.param_groups:
                group["lr"] = lr

    def fit(self, data: Tensor, steps: int, batch_size: int = 256) -> list[dict[str, float]]:
        """``steps`` steps on random minibatches of the tensor ``data`` (rows are samples)."""
        for batch in _batches(data, steps, batch_size, self.rng):
            self.step(batch)
        return self.history

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` generator samples in eval mode."""
        self.generator.eval()
        return self.generator(self.latents(n))


def _batches(data: Tensor, steps: int, batch_size: int, rng: torch.Generator) -> Iterator[Tensor]:
    if batch_size < 1 or steps < 0:
        raise GenerativeError(f"batch_size={batch_size} must be >= 1 and steps={steps} >= 0")
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=rng)
        yield data[idx.to(data.device)]


def _window_mean(history: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [float(h[key]) for h in history if key in h and math.isfinite(float(h[key]))]
    return statistics.fmean(values) if values else None


def gan_diagnostics(
    history: Sequence[Mapping[str, float]],
    *,
    window: int = 50,
    collapse_ratio: float = 0.1,
    max_d_acc: float = 0.98,
    vanishing_ratio: float = 0.01,
) -> list[Flag]:
    """Warnings from a :class:`GANTrainer` history (the means over its last ``window`` steps):

    - ``mode_collapse``: the fake samples' spread is below ``collapse_ratio`` × the real
      samples' (the generator maps most latents to one place);
    - ``discriminator_overpowering``: the discriminator classifies ≥ ``max_d_acc`` of the
      samples correctly, or the generator's gradient norm fell below ``vanishing_ratio`` × its
      value over the first ``window`` steps (no useful signal reaches G).

    Returns an empty list for a healthy (or empty) history.
    """
    if window < 1:
        raise GenerativeError(f"window={window!r} must be >= 1")
    flags: list[Flag] = []
    recent = list(history)[-window:]
    real, fake = _window_mean(recent, "real_spread"), _window_mean(recent, "fake_spread")
    if real and fake is not None and fake < collapse_ratio * real:
        flags.append(Flag(
            "mode_collapse",
            f"fake samples spread {fake:.3g} vs real {real:.3g} over the last {len(recent)} "
            "steps: the generator collapsed onto few modes",
            f"fake_spread < {collapse_ratio} x real_spread",
            ["use the hinge or wgan_gp loss", "add spectral_norm to the discriminator",
             "lower the generator's learning rate", "use a larger batch or minibatch features"],
        ))
    acc = _window_mean(recent, "d_acc")
    early = _window_mean(list(history)[:window], "g_grad_norm")
    late = _window_mean(recent, "g_grad_norm")
    vanishing = (
        early is not None and late is not None and len(history) > window
        and late < vanishing_ratio * early
    )
    if (acc is not None and acc >= max_d_acc) or vanishing:
        detail = f"D accuracy {acc:.3f}" if acc is not None else "D accuracy n/a"
        if late is not None and early:
            detail += f", G gradient norm {late:.3g} (first steps: {early:.3g})"
        flags.append(Flag(
            "discriminator_overpowering",
            f"{detail} over the last {len(recent)} steps: the discriminator wins and the "
            "generator gets little gradient",
            f"d_acc >= {max_d_acc} or g_grad_norm < {vanishing_ratio} x its start",
            [
                "use the non-saturating, hinge or wgan_gp loss",
                "add spectral_norm or a gradient penalty to the discriminator",
                "lower the discriminator's learning rate or d_steps",
                "add instance noise to the discriminator's inputs",
            ],
        ))
    return flags

