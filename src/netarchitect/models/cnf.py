"""Continuous normalising flow (FFJORD, Grathwohl et al., 2019) on torchdiffeq.

Data ``x = z(0)`` flows along ``dz/dt = f(t, z)`` to ``z(t1)``, whose density is a standard
normal. By the instantaneous change of variables ``d log p(z(t))/dt = -tr(∂f/∂z)``::

    log p(x) = log N(z(t1); 0, I) + ∫₀^t1 tr(∂f/∂z(t)) dt

The trace is exact (``dim`` backward passes: cheap for small ``dim``) or Hutchinson's
unbiased estimate ``εᵀ (∂f/∂z) ε`` with one Gaussian probe ``ε`` fixed for each solve.
:meth:`CNF.sample` integrates normal draws backwards from ``t1`` to 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..layers._factory import LayerType, check_choice, example_tensor, reset_children
from ..layers.ode import (
    DATA_DEPENDENT_CONTROL_FLOW,
    MLPODEFunc,
    check_positive_real,
    check_solver_args,
    require_torchdiffeq,
    solver_kwargs,
)
from ..registry import Example, register_block

__all__ = ["CNF", "divergence"]

Device = torch.device | str | None
Dtype = torch.dtype | None

TRACES = ("auto", "exact", "hutchinson")
#: ``trace="auto"`` is exact up to this many dimensions.
EXACT_TRACE_MAX_DIM = 8


def divergence(dz: Tensor, z: Tensor, *, noise: Tensor | None = None, create_graph: bool) -> Tensor:
    """``tr(∂dz/∂z)`` per sample: exact when ``noise`` is ``None``, else Hutchinson's
    ``εᵀ J ε`` with probe ``noise``. ``dz`` must have been computed from ``z`` with grad.

    Shapes:
        dz, z, noise: ``(B, D)`` -> ``(B,)``.
    """
    if noise is not None:
        (vjp,) = torch.autograd.grad(dz, z, noise, create_graph=create_graph)
        return (vjp * noise).sum(1)
    total = dz.new_zeros(dz.shape[0])
    for i in range(z.shape[1]):
        keep = create_graph or i < z.shape[1] - 1
        (row,) = torch.autograd.grad(
            dz[:, i].sum(), z, create_graph=create_graph, retain_graph=keep
        )
        total = total + row[:, i]
    return total


class _Dynamics:
    """``(z, a) -> (f(t, z), tr ∂f/∂z)`` for the solver; counts its evaluations."""

    def __init__(self, flow: CNF, noise: Tensor | None, create_graph: bool) -> None:
        self.flow, self.noise, self.create_graph = flow, noise, create_graph

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self.flow.nfe += 1
        z = state[0]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.flow.func(t, z)
            div = divergence(dz, z, noise=self.noise, create_graph=self.create_graph)
        if not self.create_graph:
            dz, div = dz.detach(), div.detach()
        return dz, div


@register_block("cnf")
class CNF(nn.Module):
    """FFJORD continuous normalising flow over ``dim``-dimensional vectors; ``forward(x)`` is
    :meth:`log_prob`. The dynamics are an :class:`~netarchitect.layers.ode.MLPODEFunc`.

    ``trace``: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact up to 8 dimensions).
    :attr:`nfe` counts the dynamics' evaluations of the last call.

    Shapes:
        x: ``(B, dim)`` -> log-density ``(B,)``; ``sample(n)`` -> ``(n, dim)``.
    """

    data_dependent_control_flow = DATA_DEPENDENT_CONTROL_FLOW

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int = 64,
        num_layers: int = 2,
        act_layer: LayerType = "tanh",
        t1: float = 1.0,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        trace: str = "auto",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_solver_args(solver, rtol, atol, step_size)
        check_choice("trace", trace, TRACES)
        check_positive_real("t1", t1)
        self.func = MLPODEFunc(
            dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            act_layer=act_layer,
            device=device,
            dtype=dtype,
        )
        self.dim, self.t1 = dim, float(t1)
        self.solver_kwargs = solver_kwargs(solver, float(rtol), float(atol), step_size)
        self.exact = trace == "exact" or (trace == "auto" and dim <= EXACT_TRACE_MAX_DIM)
        self.nfe = 0

    def reset_parameters(self) -> None:
        reset_children(self)

    def _integrate(self, z: Tensor, t0: float, t1: float, trace: bool) -> tuple[Tensor, Tensor]:
        self.nfe = 0
        t = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
        create = torch.is_grad_enabled()
        noise = None if self.exact or not trace else torch.randn_like(z)
        state = (z, z.new_zeros(z.shape[0]))
        lib = require_torchdiffeq()
        zt, acc = lib.odeint(_Dynamics(self, noise, create), state, t, **self.solver_kwargs)
        return zt[-1], acc[-1]

    def to_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z(t1)`` and ``∫ tr(∂f/∂z) dt`` (the log-determinant of the flow) for data ``x``."""
        return self._integrate(x, 0.0, self.t1, trace=True)

    def from_latent(self, z: Tensor) -> Tensor:
        """Data for latent ``z``: the flow integrated backwards from ``t1`` to 0."""
        return self._integrate(z, self.t1, 0.0, trace=False)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` (natural log) per sample."""
        if x.device.type == "meta":  # no values to step with: the shape of the result
            return self.func(x.new_zeros(()), x).sum(1)
        z, logdet = self.to_latent(x)
        base = -0.5 * (z.pow(2).sum(1) + self.dim * math.log(2 * math.pi))
        return base + logdet

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    @torch.no_grad()
    def sample(self, num: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``num`` samples: standard-normal latents mapped back through the flow."""
        p = next(self.parameters())
        z = torch.randn(num, self.dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.from_latent(z)

    @classmethod
    def example(cls) -> Example:
        kwargs: dict[str, Any] = {"dim": 2, "hidden_dim": 8, "solver": "rk4", "step_size": 0.25}
        return Example(kwargs, (example_tensor(4, 2),))
