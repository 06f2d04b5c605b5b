"""Neural ODE blocks (Chen et al., 2018) on torchdiffeq, with exact NFE accounting.

:class:`ODEBlock` integrates ``dz/dt = f(t, z)`` from ``t_span[0]`` to ``t_span[-1]`` and
returns ``z(t_span[-1])``; ``f`` is any module called as ``f(t, z)``. Its
:attr:`~ODEBlock.nfe_forward` / :attr:`~ODEBlock.nfe_backward` count the function
evaluations of the last forward solve and of its backward pass (the adjoint solve;
0 when back-propagating through the solver). ``augment_dim`` appends zero channels
(Augmented Neural ODEs, Dupont et al., 2019); ``regularize`` integrates RNODE's kinetic
energy ``∫‖f‖²dt`` and Jacobian Frobenius norm ``∫‖∂f/∂z‖²_F dt`` (Hutchinson estimate;
Finlay et al., 2020) alongside the state while training, reported per sample (batch mean)
in :attr:`~ODEBlock.regularization` for the caller to add to its loss.

torchdiffeq is the optional ``ode`` extra: this module imports without it and the
blocks raise :class:`~netarchitect.errors.NetArchitectError` when built.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, ShapeError, SpecError
from ..registry import Example, layer_table, register_block
from ._factory import (
    LayerType,
    check_choice,
    check_positive_int,
    example_tensor,
    reset_children,
    resolve_layer,
)
from .activation import get_act_layer

try:
    import torchdiffeq
    from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
except ImportError:  # pragma: no cover - exercised only without the extra
    torchdiffeq = None
    _TORCHDIFFEQ_SOLVERS = {}

__all__ = [
    "SOLVERS",
    "ConvODEFunc",
    "MLPODEFunc",
    "ODEBlock",
    "check_positive_real",
    "check_solver_args",
    "ode_func_names",
    "require_torchdiffeq",
    "solver_kwargs",
]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Solver names torchdiffeq accepts (empty without the ``ode`` extra).
SOLVERS: tuple[str, ...] = tuple(sorted(_TORCHDIFFEQ_SOLVERS))
#: Solvers that choose their own step size from ``rtol``/``atol``.
ADAPTIVE = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "fehlberg2", "scipy_solver")
REGULARIZERS = ("kinetic", "jacobian")


def require_torchdiffeq() -> Any:
    """The torchdiffeq module, or a ``NetArchitectError`` saying how to install it."""
    if torchdiffeq is None:
        raise NetArchitectError(
            "Neural ODE blocks need torchdiffeq: pip install 'netarchitect[ode]'"
        )
    return torchdiffeq


def check_solver_args(solver: str, rtol: Any, atol: Any, step_size: Any = None) -> None:
    """Raise ``SpecError`` for an unknown solver (listing torchdiffeq's), a tolerance <= 0 or
    a step size <= 0; ``NetArchitectError`` when torchdiffeq is missing."""
    require_torchdiffeq()
    check_choice("solver", solver, SOLVERS)
    check_positive_real("rtol", rtol)
    check_positive_real("atol", atol)
    if step_size is not None:
        check_positive_real("step_size", step_size)


def solver_kwargs(solver: str, rtol: float, atol: float, step_size: float | None) -> dict[str, Any]:
    """Keyword arguments of ``torchdiffeq.odeint`` for these solver settings."""
    kwargs: dict[str, Any] = {"rtol": rtol, "atol": atol, "method": solver}
    if step_size is not None and solver not in ADAPTIVE:
        kwargs["options"] = {"step_size": step_size}
    return kwargs


def check_positive_real(name: str, value: Any) -> None:
    """Raise ``SpecError`` (with ``path=name``) unless ``value`` is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(f"{name}={value!r} must be a number > 0", path=name)


def _check_t_span(t_span: Any) -> tuple[float, ...]:
    try:
        times = tuple(float(t) for t in t_span)
    except (TypeError, ValueError):
        raise SpecError(f"t_span={t_span!r} must be a sequence of numbers", path="t_span") from None
    if len(times) < 2 or any(b <= a for a, b in itertools.pairwise(times)):
        raise SpecError(
            f"t_span={t_span!r} must hold at least two strictly increasing times", path="t_span"
        )
    return times


def _with_time(t: Tensor, x: Tensor) -> Tensor:
    """``x`` with ``t`` appended as one more channel (dim 1), as torchdiffeq's ConcatConv."""
    tt = torch.ones_like(x[:, :1]) * t  # (B, 1, ...)
    return torch.cat([x, tt], dim=1)


class _Counted:
    """Calls ``block.func`` for the solver: counts each evaluation (forward or backward phase),
    checks the output shape, and adds the regularisation integrands when asked."""

    def __init__(self, block: ODEBlock, noise: Tensor | None) -> None:
        self.block = block
        self.noise = noise  # Hutchinson probe, fixed for the solve (else steps never settle)

    def __call__(self, t: Tensor, state: Tensor | tuple[Tensor, ...]) -> Any:
        block = self.block
        if block._in_forward:
            block.nfe_forward += 1
        else:
            block.nfe_backward += 1
        z = state[0] if isinstance(state, tuple) else state
        if self.noise is None:
            return block.evaluate(t, z)
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.requires_grad_(True)
            dz = block.evaluate(t, z)
            (vjp,) = torch.autograd.grad(dz, z, self.noise, create_graph=True)
        flat = dz.flatten(1)
        kinetic = flat.pow(2).sum(1)  # (B,)
        jacobian = vjp.flatten(1).pow(2).sum(1)  # (B,)
        return dz, kinetic, jacobian


#: Why modules that solve an ODE cannot be one graph: the solvers (torchdiffeq) check their
#: time grid and choose their steps from tensor values in Python.
DATA_DEPENDENT_CONTROL_FLOW = (
    "torchdiffeq checks its time grid and picks its steps from tensor values in Python: "
    "torch.compile breaks the graph there and torch.export refuses"
)


@register_block("ode_block")
class ODEBlock(nn.Module):
    """``z(t1) = z(t0) + ∫ f(t, z) dt`` solved by torchdiffeq (Neural ODE, Chen et al., 2018).

    ``func`` is a module (moved to ``device``/``dtype`` when given), or a layer type
    resolved in the ``ode_func`` table (``"ode_mlp_func"``, ``{"name": "ode_conv_func",
    "in_channels": 8}``, a class or partial) called with ``device=``/``dtype=``; it is
    called ``func(t, z)`` and must return a tensor shaped like ``z``.
    ``solver`` is any torchdiffeq method; ``rtol``/``atol`` steer the adaptive ones,
    ``step_size`` the fixed-grid ones (default: one step per ``t_span`` interval).
    ``adjoint=True`` back-propagates by solving the adjoint ODE backwards (O(1) memory in
    the number of steps) instead of through the solver's operations.

    Shapes:
        input ``(B, C, ...)`` -> output ``(B, C + augment_dim, ...)``.
    """

    data_dependent_control_flow = DATA_DEPENDENT_CONTROL_FLOW

    def __init__(
        self,
        func: nn.Module | LayerType,
        *,
        t_span: Sequence[float] = (0.0, 1.0),
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        adjoint: bool = False,
        augment_dim: int = 0,
        regularize: Sequence[str] = (),
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_solver_args(solver, rtol, atol, step_size)
        if augment_dim:
            check_positive_int("augment_dim", augment_dim)
        for name in regularize:
            check_choice("regularize", name, REGULARIZERS)
        self.t_span = _check_t_span(t_span)
        self.func = _materialise(func, {"device": device, "dtype": dtype})
        self.solver, self.rtol, self.atol = solver, float(rtol), float(atol)
        self.step_size = None if step_size is None else float(step_size)
        self.adjoint = bool(adjoint)
        self.augment_dim = int(augment_dim)
        self.regularize = tuple(regularize)
        self.regularization: dict[str, Tensor] = {}
        self._in_forward = False
        self.reset()

    def reset(self) -> None:
        """Zero the NFE counters."""
        self.nfe_forward = 0
        self.nfe_backward = 0

    def reset_parameters(self) -> None:
        reset = getattr(self.func, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            reset_children(self.func)

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, t_span={self.t_span}, rtol={self.rtol}, atol={self.atol}, "
            f"adjoint={self.adjoint}, augment_dim={self.augment_dim}"
        )

    def evaluate(self, t: Tensor, z: Tensor) -> Tensor:
        """One evaluation ``f(t, z)``, checked to keep the shape of ``z``."""
        dz = self.func(t, z)
        if not isinstance(dz, Tensor) or dz.shape != z.shape:
            got = tuple(dz.shape) if isinstance(dz, Tensor) else type(dz).__name__
            raise ShapeError(
                f"ODE func {type(self.func).__name__} returned {got} for a state of shape "
                f"{tuple(z.shape)}: dz/dt must have the shape of z",
                path="func",
            )
        return dz

    def augment(self, x: Tensor) -> Tensor:
        """``x`` with ``augment_dim`` zero channels appended on dim 1."""
        if not self.augment_dim:
            return x
        zeros = x.new_zeros(x.shape[0], self.augment_dim, *x.shape[2:])
        return torch.cat([x, zeros], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        self.reset()
        self.regularization = {}
        z0 = self.augment(x)
        t = torch.tensor(self.t_span, dtype=z0.dtype, device=z0.device)
        return self.solve(z0, t)[-1]

    def solve(self, z0: Tensor, t: Tensor) -> Tensor:
        """The trajectory ``z(t[i])`` from ``z(t[0]) = z0`` (no augmentation), shape
        ``(len(t), *z0.shape)``. Adds to the NFE counters (``forward`` resets them first)."""
        if z0.device.type == "meta":  # no values to step with: one evaluation gives the shape
            self.nfe_forward += 1
            return self.evaluate(t[0], z0).expand(len(t), *z0.shape)
        regularize = bool(self.regularize) and self.training and torch.is_grad_enabled()
        state: Tensor | tuple[Tensor, ...] = z0
        if regularize:
            zero = z0.new_zeros(z0.shape[0])
            state = (z0, zero, zero)
        lib = require_torchdiffeq()
        kwargs = solver_kwargs(self.solver, self.rtol, self.atol, self.step_size)
        func = _Counted(self, torch.randn_like(z0) if regularize else None)
        self._in_forward = True
        try:
            if self.adjoint:
                params = tuple(p for p in self.func.parameters() if p.requires_grad)
                out = lib.odeint_adjoint(func, state, t, adjoint_params=params, **kwargs)
            else:
                out = lib.odeint(func, state, t, **kwargs)
        finally:
            self._in_forward = False
        if regularize:
            out, kinetic, jacobian = out
            values = {"kinetic": kinetic[-1].mean(), "jacobian": jacobian[-1].mean()}
            self.regularization = {k: values[k] for k in self.regularize}
        return out

    @classmethod
    def examples(cls) -> list[Example]:
        mlp = functools.partial(MLPODEFunc, 3, hidden_dim=8)
        inputs = (example_tensor(4, 3),)
        return [
            Example({"func": mlp, "solver": "rk4", "step_size": 0.25}, inputs, name="rk4"),
            Example(
                {
                    "func": functools.partial(MLPODEFunc, 5, hidden_dim=8),
                    "solver": "dopri5",
                    "adjoint": True,
                    "augment_dim": 2,
                },
                inputs,
                skip={"batch_independence": "the adaptive step size is chosen for the batch"},
                name="dopri5_adjoint",
            ),
        ]

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]


def _materialise(func: nn.Module | LayerType, factory: dict[str, Any]) -> nn.Module:
    if isinstance(func, nn.Module):
        if factory["device"] is not None or factory["dtype"] is not None:
            func.to(**factory)
        return func
    if func is None:
        raise SpecError("func must be an ODE function module or layer type, got None", path="func")
    return resolve_layer(func, layer_table("ode_func"), kind="ode_func")(**factory)


@register_block("ode_mlp_func", kind="ode_func")
class MLPODEFunc(nn.Module):
    """``f(t, z) = W₃ σ(W₂ σ(W₁ [z, t]))``: an MLP on the state with time as an extra input
    (the dynamics of FFJORD's toy densities).

    Shapes:
        t: scalar, z: ``(B, dim)`` -> ``(B, dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int = 64,
        num_layers: int = 2,
        act_layer: LayerType = "tanh",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_layers", num_layers)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        sizes = [dim + 1] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(
            nn.Linear(a, b, **factory) for a, b in itertools.pairwise(sizes)
        )
        self.act = get_act_layer(act_layer)(**factory)
        self.out = nn.Linear(hidden_dim, dim, **factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        h = _with_time(t, z)  # (B, dim + 1)
        for layer in self.layers:
            h = self.act(layer(h))
        return self.out(h)

    @classmethod
    def example(cls) -> Example:
        return Example(
            {"dim": 3, "hidden_dim": 8},
            (torch.tensor(0.5), example_tensor(4, 3)),
            skip={"batch_independence": "the first input is the scalar time"},
        )


@register_block("ode_conv_func", kind="ode_func")
class ConvODEFunc(nn.Module):
    """``f(t, z) = conv₂([σ(conv₁([z, t])), t])``: two 3×3 convolutions with time as an extra
    channel (torchdiffeq's ODE-Net for MNIST, without its group norms).

    Shapes:
        t: scalar, z: ``(B, in_channels, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        hidden_channels: int | None = None,
        act_layer: LayerType = "relu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        hidden = hidden_channels or in_channels
        check_positive_int("hidden_channels", hidden)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_channels + 1, hidden, 3, padding=1, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.conv2 = nn.Conv2d(hidden + 1, in_channels, 3, padding=1, **factory)

    def reset_parameters(self) -> None:
        reset_children(self)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        h = self.act(self.conv1(_with_time(t, z)))  # (B, hidden, H, W)
        return self.conv2(_with_time(t, h))

    @classmethod
    def example(cls) -> Example:
        return Example(
            {"in_channels": 2, "hidden_channels": 4},
            (torch.tensor(0.5), example_tensor(2, 2, 5, 5)),
            skip={"batch_independence": "the first input is the scalar time"},
        )


def ode_func_names() -> list[str]:
    """Names the ``func=`` argument of :class:`ODEBlock` accepts."""
    return sorted(layer_table("ode_func"))
