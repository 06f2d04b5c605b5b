"""Latent ODE for irregularly sampled time series (Rubanova et al., 2019).

A sequence ``x(t₁..t_T)`` is encoded by an ODE-RNN run *backwards* in time over the
observations (its last state summarises the series as seen from ``t₁``) into a Gaussian
posterior ``q(z₀ | x) = N(μ, diag σ²)`` over the latent state at ``t₁``. A latent ODE
``dz/dt = f(t, z)`` carries ``z₀`` to any requested times, and a linear observation model
maps each ``z(t)`` to the mean of ``p(x(t) | z(t)) = N(W z(t) + b, obs_std²)``.

Training maximises the ELBO ``E_q[log p(x | z₀)] - KL(q(z₀ | x) ‖ N(0, I))`` with one
reparameterised sample and the KL in closed form (:meth:`LatentODE.elbo`,
:meth:`LatentODE.loss`). A ``mask`` (1 = observed) lets each series in a batch be
observed at its own subset of the shared time grid (the encoder reads ``[x·mask, mask]``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ShapeError, SpecError
from ..layers._factory import check_positive_int, example_tensor, reset_children
from ..layers.ode import DATA_DEPENDENT_CONTROL_FLOW, MLPODEFunc, ODEBlock, check_positive_real
from ..registry import Example, register_block
from .ode import ODERNN

__all__ = ["ELBO", "LatentODE", "gaussian_kl"]

Device = torch.device | str | None
Dtype = torch.dtype | None


class ELBO(NamedTuple):
    """Per-series terms of the ELBO: ``log_likelihood`` and ``kl`` (both ``(B,)``)."""

    log_likelihood: Tensor
    kl: Tensor


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mean, e^logvar) ‖ N(0, I))`` summed over the last dim: ``(B, D) -> (B,)``."""
    return 0.5 * (logvar.exp() + mean.pow(2) - 1 - logvar).sum(-1)


def _check_times(times: Tensor, name: str, length: int | None = None) -> None:
    if times.ndim != 1 or (length is not None and times.shape[0] != length) or not len(times):
        want = f"({length},)" if length is not None else "(T,) with T >= 1"
        raise ShapeError(f"{name} has shape {tuple(times.shape)}: expected {want}", path=name)
    if times.device.type != "meta" and bool((times[1:] <= times[:-1]).any()):
        raise SpecError(f"{name} must be strictly increasing, got {times.tolist()}", path=name)


@register_block("latent_ode")
class LatentODE(nn.Module):
    """Latent ODE: ODE-RNN encoder (backwards in time) → ``q(z₀)`` → ODE decoder → Gaussian
    observations (Rubanova et al., 2019).

    ``forward(x, times, pred_times=None, mask=None)`` returns the predicted mean of the
    observations at ``pred_times`` (default: ``times``), which must start at or after
    ``times[0]`` (the time of ``z₀``). In training mode ``z₀`` is a reparameterised sample of
    ``q``; in eval mode it is the posterior mean, so predictions are deterministic.
    :meth:`extrapolate` predicts beyond the last observation.

    Shapes:
        x: ``(B, T, obs_dim)``, times: ``(T,)`` strictly increasing, mask: like ``x`` (1 =
        observed), pred_times: ``(T',)`` strictly increasing -> ``(B, T', obs_dim)``.
    """

    data_dependent_control_flow = DATA_DEPENDENT_CONTROL_FLOW

    def __init__(
        self,
        obs_dim: int,
        *,
        latent_dim: int = 8,
        hidden_size: int = 32,
        func_hidden_dim: int = 64,
        obs_std: float = 0.1,
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("latent_dim", latent_dim)):
            check_positive_int(name, value)
        check_positive_real("obs_std", obs_std)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        solver_args = {"solver": solver, "rtol": rtol, "atol": atol, "step_size": step_size}
        self.encoder = ODERNN(
            2 * obs_dim, hidden_size, func_hidden_dim=func_hidden_dim, **solver_args, **factory
        )
        self.to_posterior = nn.Linear(hidden_size, 2 * latent_dim, **factory)
        func = MLPODEFunc(latent_dim, hidden_dim=func_hidden_dim, **factory)
        self.dynamics = ODEBlock(func, **solver_args)
        self.decoder = nn.Linear(latent_dim, obs_dim, **factory)
        self.obs_dim, self.latent_dim, self.obs_std = obs_dim, latent_dim, float(obs_std)

    def reset_parameters(self) -> None:
        reset_children(self)

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, latent_dim={self.latent_dim}, obs_std={self.obs_std}"

    # -- the three stages ------------------------------------------------------------------------
    def _check(self, x: Tensor, times: Tensor, mask: Tensor | None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.obs_dim:
            raise ShapeError(
                f"x has shape {tuple(x.shape)}: expected (B, T, obs_dim={self.obs_dim})", path="x"
            )
        _check_times(times, "times", x.shape[1])
        if mask is None:
            return torch.ones_like(x)
        if mask.shape != x.shape:
            raise ShapeError(
                f"mask has shape {tuple(mask.shape)}: expected the shape of x {tuple(x.shape)}",
                path="mask",
            )
        return mask.to(x.dtype)

    def encode(self, x: Tensor, times: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(z₀ | x)``, each ``(B, latent_dim)``."""
        mask = self._check(x, times, mask)
        seq = torch.cat([x * mask, mask], dim=-1).flip(1)  # (B, T, 2·obs_dim), last obs first
        h = self.encoder(seq, -times.flip(0))[:, -1]  # reversed time runs forwards in -t
        mean, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z0: Tensor, t0: Tensor, pred_times: Tensor) -> Tensor:
        """Observation means ``(B, T', obs_dim)`` at ``pred_times`` for ``z(t0) = z0``."""
        _check_times(pred_times, "pred_times")
        t0 = t0.reshape(1).to(pred_times)
        if pred_times.device.type != "meta" and bool(pred_times[0] < t0):
            raise SpecError(
                f"pred_times start at {pred_times[0].item():g}, before the first observation "
                f"time {t0.item():g} where z0 lives",
                path="pred_times",
            )
        self.dynamics.reset()
        starts_at_t0 = pred_times.device.type != "meta" and bool(pred_times[0] == t0)
        grid = pred_times if starts_at_t0 else torch.cat([t0, pred_times])
        z = self.dynamics.solve(z0, grid.to(z0.dtype))  # (len(grid), B, latent)
        z = z if starts_at_t0 else z[1:]
        return self.decoder(z.transpose(0, 1))  # (B, T', obs_dim)

    def _z0(self, mean: Tensor, logvar: Tensor) -> Tensor:
        if not self.training:
            return mean
        return mean + (0.5 * logvar).exp() * torch.randn_like(mean)

    # -- public entry points ---------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        times: Tensor,
        pred_times: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        mean, logvar = self.encode(x, times, mask)
        return self.decode(
            self._z0(mean, logvar), times[:1], times if pred_times is None else pred_times
        )

    def extrapolate(
        self, x: Tensor, times: Tensor, future_times: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """Predicted means at ``future_times`` (all after ``times[-1]``), ``(B, T', obs_dim)``."""
        _check_times(future_times, "future_times")
        if future_times.device.type != "meta" and bool(future_times[0] <= times[-1]):
            raise SpecError(
                f"future_times must lie after the last observation time {times[-1].item():g}, "
                f"got {future_times[0].item():g} first",
                path="future_times",
            )
        return self(x, times, future_times, mask)

    def elbo(self, x: Tensor, times: Tensor, mask: Tensor | None = None) -> ELBO:
        """One-sample ELBO terms per series: Gaussian log-likelihood of the observed values
        (``mask``) under a reparameterised ``z₀ ~ q``, and the analytic KL to ``N(0, I)``."""
        mask = self._check(x, times, mask)
        mean, logvar = self.encode(x, times, mask)
        z0 = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        pred = self.decode(z0, times[:1], times)
        log_norm = math.log(self.obs_std) + 0.5 * math.log(2 * math.pi)
        log_p = -0.5 * ((x - pred) / self.obs_std).pow(2) - log_norm  # (B, T, obs_dim)
        return ELBO((log_p * mask).sum((1, 2)), gaussian_kl(mean, logvar))

    def loss(
        self, x: Tensor, times: Tensor, mask: Tensor | None = None, *, kl_weight: float = 1.0
    ) -> Tensor:
        """Negative ELBO (KL scaled by ``kl_weight``, e.g. annealed from 0 to 1) per observed
        value: a scalar to minimise."""
        terms = self.elbo(x, times, mask)
        observed = x.numel() if mask is None else mask.sum().clamp_min(1)
        return -(terms.log_likelihood - kl_weight * terms.kl).sum() / observed

    @classmethod
    def example(cls) -> Example:
        kwargs = {
            "obs_dim": 2,
            "latent_dim": 3,
            "hidden_size": 4,
            "func_hidden_dim": 8,
            "solver": "rk4",
            "step_size": 0.25,
        }
        times = torch.tensor([0.0, 0.3, 1.0, 1.2, 2.0])
        return Example(kwargs, (example_tensor(2, 5, 2), times))
