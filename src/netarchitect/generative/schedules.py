"""Diffusion noise schedules and the forward process ``q(x_t | x_0)`` (Ho et al., 2020).

A schedule is ``β_t`` for ``t = 0 .. T-1`` with ``α_t = 1 - β_t`` and ``ᾱ_t = ∏_{s≤t} α_s``;
noising jumps in closed form::

    q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)

Every table is float64 (1000-term cumulative products lose digits in float32); values are cast
to the data's dtype where they meet it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import GenerativeError

__all__ = ["NoiseSchedule", "extract", "get_schedule", "q_mean_var", "q_sample"]

SCHEDULES = ("linear", "scaled_linear", "cosine")


def _check_steps(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenerativeError(f"{name}: {value!r} is not a positive integer")
    return value


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """An immutable diffusion schedule: float64 ``betas``, ``alphas``, ``alphas_cumprod``
    (each ``(T,)``), validated on construction: ``β_t ∈ (0, 1)`` and hence ``ᾱ_t`` strictly
    decreasing inside ``(0, 1)``. Build one with :meth:`linear`, :meth:`cosine`,
    :meth:`scaled_linear` or :meth:`from_betas`.
    """

    betas: Tensor
    alphas: Tensor = field(init=False, repr=False)
    alphas_cumprod: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        b = self.betas
        if b.ndim != 1 or b.numel() == 0:
            raise GenerativeError(f"betas: need a non-empty 1-D sequence, got shape {tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise GenerativeError("betas: contain a non-finite value")
        bad = ((b <= 0) | (b >= 1)).nonzero()
        if bad.numel():
            i = int(bad[0])
            raise GenerativeError(f"betas[{i}]: {float(b[i])!r} is not in (0, 1)")
        ac = torch.cumprod(1.0 - b, 0)
        # β in (0, 1) makes ᾱ decrease in exact arithmetic; float64 can still underflow to 0
        # or round a tiny β away (ᾱ_t == ᾱ_{t-1})
        ok = torch.cat([ac[:1] > 0, (ac[1:] < ac[:-1]) & (ac[1:] > 0)])
        if not ok.all():
            i = int((~ok).nonzero()[0])
            raise GenerativeError(
                f"betas: alphas_cumprod is not strictly decreasing in (0, 1) at step {i} "
                f"(alphas_cumprod[{i}] = {float(ac[i])!r})"
            )
        object.__setattr__(self, "alphas", 1.0 - b)
        object.__setattr__(self, "alphas_cumprod", ac)

    @property
    def num_steps(self) -> int:
        """``T``, the number of training timesteps."""
        return int(self.betas.numel())

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        b = self.betas
        return f"NoiseSchedule(T={self.num_steps}, beta[0]={float(b[0]):.3g}, beta[-1]={float(b[-1]):.3g})"

    @classmethod
    def from_betas(cls, betas: Sequence[float] | Tensor) -> NoiseSchedule:
        """A schedule with the given ``β_t`` (any sequence of floats in (0, 1))."""
        try:
            t = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
        except (TypeError, ValueError, RuntimeError) as e:
            raise GenerativeError(f"betas: not a sequence of numbers ({e})") from None
        return cls(t)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """``β_t`` evenly spaced from ``beta_start`` to ``beta_end`` (DDPM's schedule)."""
        _check_steps("T", T)
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def scaled_linear(
        cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> NoiseSchedule:
        """``√β_t`` evenly spaced (latent diffusion's schedule; diffusers' ``scaled_linear``)."""
        _check_steps("T", T)
        lin = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64)
        return cls(lin**2)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal (2021): ``ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2)``, with
        ``β_t = min(1 - ᾱ(t+1)/ᾱ(t), max_beta)`` (diffusers' ``squaredcos_cap_v2``)."""
        _check_steps("T", T)
        if not 0 < max_beta < 1:
            raise GenerativeError(f"max_beta: {max_beta!r} is not in (0, 1)")
        if not s >= 0:
            raise GenerativeError(f"s: {s!r} is negative")

        def abar(x: Tensor) -> Tensor:
            return torch.cos((x / T + s) / (1 + s) * math.pi / 2) ** 2

        i = torch.arange(T, dtype=torch.float64)
        return cls(torch.clamp(1 - abar(i + 1) / abar(i), max=max_beta))


def get_schedule(name: str | Sequence[float] | Tensor | NoiseSchedule, T: int = 1000) -> NoiseSchedule:
    """A schedule by name (``"linear"``, ``"scaled_linear"``, ``"cosine"`` with ``T`` steps
    and default parameters), from a list of betas, or an existing schedule unchanged."""
    if isinstance(name, NoiseSchedule):
        return name
    if isinstance(name, str):
        if name == "linear":
            return NoiseSchedule.linear(T)
        if name == "scaled_linear":
            return NoiseSchedule.scaled_linear(T)
        if name == "cosine":
            return NoiseSchedule.cosine(T)
        from ..errors import suggest

        raise GenerativeError(f"schedule: unknown {name!r}{suggest(name, SCHEDULES)}; one of {SCHEDULES}")
    return NoiseSchedule.from_betas(name)


def extract(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``table[t]`` cast to ``like``'s dtype/device and shaped ``(B, 1, ..., 1)`` to broadcast
    against ``like`` ``(B, ...)``."""
    t = torch.as_tensor(t, device=table.device)
    vals = table[t.long()].to(device=like.device, dtype=like.dtype)
    return vals.reshape(vals.shape + (1,) * (like.ndim - vals.ndim))


def _check_t(schedule: NoiseSchedule, t: Tensor) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.num_steps):
        raise GenerativeError(
            f"t: timesteps must lie in [0, {schedule.num_steps}), got [{int(t.min())}, {int(t.max())}]"
        )


def q_mean_var(schedule: NoiseSchedule, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``√ᾱ_t x_0`` and variance ``(1 - ᾱ_t)`` (broadcastable) of ``q(x_t | x_0)``."""
    _check_t(schedule, t)
    ac = extract(schedule.alphas_cumprod, t, x0)
    return ac.sqrt() * x0, 1.0 - ac


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
    """A draw of ``x_t ~ q(x_t | x_0)``: ``√ᾱ_t x_0 + √(1 - ᾱ_t) ε`` (``noise`` is ``ε``; a
    fresh standard normal when ``None``).

    Shapes:
        x0, noise: ``(B, ...)``; t: ``(B,)`` int -> ``(B, ...)``.
    """
    mean, var = q_mean_var(schedule, x0, t)
    if noise is None:
        noise = torch.randn_like(x0)
    return mean + var.sqrt() * noise
