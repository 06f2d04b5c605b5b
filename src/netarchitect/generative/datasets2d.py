"""Seeded 2-D toy data sets for generative models: the swiss roll and a ring of Gaussians."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import GenerativeError

__all__ = ["gaussian_ring", "ring_modes", "swiss_roll"]


def _gen(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GenerativeError(f"n: {n!r} is not a positive integer")
    return n


def swiss_roll(
    n: int,
    *,
    noise: float = 0.05,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    scale: float = 0.1,
) -> Tensor:
    """``n`` points of a 2-D swiss roll (scikit-learn's ``make_swiss_roll`` in the x–z plane:
    ``u ~ 1.5π (1 + 2U)``, point ``(u cos u, u sin u)``), times ``scale`` (default: roughly
    unit variance) plus Gaussian ``noise`` (after scaling). float32 ``(n, 2)``."""
    _check_n(n)
    if noise < 0:
        raise GenerativeError(f"noise: {noise!r} is negative")
    g = _gen(generator, seed)
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) * scale
    pts = pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return pts.float()


def ring_modes(modes: int = 8, radius: float = 2.0) -> Tensor:
    """The ``modes`` centres ``radius (cos 2πk/m, sin 2πk/m)`` of :func:`gaussian_ring`, ``(m, 2)``."""
    if isinstance(modes, bool) or not isinstance(modes, int) or modes < 1:
        raise GenerativeError(f"modes: {modes!r} is not a positive integer")
    if not radius > 0:
        raise GenerativeError(f"radius: {radius!r} is not positive")
    a = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    return (radius * torch.stack([torch.cos(a), torch.sin(a)], 1)).float()


def gaussian_ring(
    n: int,
    modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    seed: int | None = 0,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``n`` points from an equal mixture of ``modes`` isotropic Gaussians (std ``std``) centred
    on a circle of ``radius``; returns ``(points (n, 2) float32, mode index (n,) int64)``."""
    _check_n(n)
    centres = ring_modes(modes, radius)
    if not std > 0:
        raise GenerativeError(f"std: {std!r} is not positive")
    g = _gen(generator, seed)
    k = torch.randint(0, modes, (n,), generator=g)
    pts = centres[k] + std * torch.randn(n, 2, generator=g)
    return pts, k
