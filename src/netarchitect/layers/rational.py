"""Learnable rational activation: the safe Padé Activation Unit (Molina et al., ICLR 2020).

The coefficients start as a least-squares fit of a named activation over an interval,
computed deterministically (float64, fixed grid) when the module is built and cached, so
``reset_parameters()`` and a ``meta`` build followed by materialisation give exactly the
fitted values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError, SpecError
from ..registry import Example, register_block
from ._factory import check_choice, check_positive_int, example_tensor

__all__ = ["RATIONAL_INITS", "Rational", "fit_rational"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Activations a :class:`Rational` can be initialised to (evaluated in float64 when fitting).
RATIONAL_INITS: dict[str, Callable[[Tensor], Tensor]] = {
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "identity": lambda x: x.clone(),
}

_GRID_POINTS = 2001  # uniform fitting grid over the interval
_REFINEMENTS = 30  # sign-aware Sanathanan-Koerner re-weightings after the linearised fit


def _powers(t: Tensor, degrees: range) -> Tensor:
    return torch.stack([t**k for k in degrees], dim=1)  # (N, len(degrees))


@functools.lru_cache(maxsize=64)
def fit_rational(
    init: str, numerator_degree: int, denominator_degree: int, interval: tuple[float, float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients ``(a_0..a_m), (b_1..b_n)`` of ``P(x) / (1 + |B(x)|)`` fitting ``init``.

    Least squares in float64 on a fixed uniform grid of the interval, in the scaled variable
    ``t = x / r`` (``r`` = largest ``|end|``) for conditioning:

    1. the linearised problem ``P(t) - y·B(t) = y`` (the classic Padé/Loeb fit of the
       *unsafe* form ``P / (1 + B)``);
    2. then re-weighted, sign-aware solves ``(P(t) - y·s·B(t)) / Q₀ = y / Q₀`` with
       ``s = sign B₀(t)`` and ``Q₀ = 1 + |B₀(t)|`` from the previous solution. At a fixed
       point the residual is exactly the error of the *safe* form. Checking that the unsafe
       denominator ``1 + B`` stays positive would not be enough: ``1 + |B|`` equals ``1 + B``
       only where ``B >= 0``, and a fitted ``B`` usually changes sign (its ``b_1 x`` term).

    Every candidate is scored by its max error in the safe form on the grid; the best wins.
    Deterministic and cached: the same arguments always give the same floats.
    """
    lo, hi = interval
    scale = max(abs(lo), abs(hi))
    x = torch.linspace(lo, hi, _GRID_POINTS, dtype=torch.float64)
    y = RATIONAL_INITS[init](x)
    t = x / scale
    num_cols = _powers(t, range(numerator_degree + 1))  # (N, m+1)
    den_cols = _powers(t, range(1, denominator_degree + 1))  # (N, n)
    sign, weight = torch.ones_like(t), torch.ones_like(t)
    best_err, coef = math.inf, torch.empty(0)
    for _ in range(_REFINEMENTS + 1):
        lhs = torch.cat([num_cols, -(y * sign)[:, None] * den_cols], dim=1) / weight[:, None]
        sol = torch.linalg.lstsq(lhs, (y / weight)[:, None], driver="gelsd").solution[:, 0]
        den = den_cols @ sol[numerator_degree + 1 :]
        err = ((num_cols @ sol[: numerator_degree + 1]) / (1 + den.abs()) - y).abs().max().item()
        if err < best_err:  # keep the best safe-form fit seen
            best_err, coef = err, sol
        sign, weight = torch.where(den < 0, -1.0, 1.0).to(den), 1 + den.abs()
    a = coef[: numerator_degree + 1] / scale ** torch.arange(numerator_degree + 1)
    b = coef[numerator_degree + 1 :] / scale ** torch.arange(1, denominator_degree + 1)
    return tuple(a.tolist()), tuple(b.tolist())


def _check_interval(interval: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise SpecError(f"interval={interval!r} must be two numbers (lo, hi)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise SpecError(f"interval={interval!r} must be finite with lo < hi")
    return lo, hi


def _signed_abs(v: Tensor) -> Tensor:
    """``|v|`` whose gradient at ``v = 0`` is +1 (not 0), so an all-zero denominator
    (``init="identity"``) still learns."""
    return torch.where(v < 0, -v, v)


def _horner(coeffs: Sequence[Tensor], u: Tensor, w: Tensor) -> Tensor:
    """Homogeneous Horner: ``Σ_k c_k u^k w^(d-k)`` for ``coeffs = (c_0..c_d)``."""
    acc, w_pow = coeffs[-1], w
    for c in reversed(coeffs[:-1]):
        acc = acc * u + c * w_pow
        w_pow = w_pow * w
    return acc


@register_block("rational", kind="act")
class Rational(nn.Module):
    """Safe Padé Activation Unit (Molina et al., ICLR 2020), a learnable rational function

    ``f(x) = (a_0 + a_1 x + ... + a_m x^m) / (1 + |b_1 x + ... + b_n x^n|)``,

    with ``m = numerator_degree`` (5) and ``n = denominator_degree`` (4). The denominator is
    at least 1, so ``f`` has no poles. Coefficients are shared by all channels
    (``num_groups=1``) or one set per contiguous group of channels along ``channel_dim``
    (the group-rational of KAT, Yang & Wang 2024).

    ``init`` names the activation the coefficients are fitted to over ``interval``
    (:func:`fit_rational`): ``leaky_relu`` (slope 0.01), ``relu``, ``gelu``, ``silu``,
    ``tanh`` or ``identity``. Max fit errors on the default ``[-3, 3]`` are about 0.038
    (relu, leaky_relu), 8e-4 (gelu), 3e-6 (silu, tanh). Outside the interval the fitted
    shape is not controlled: it grows like ``|x|^(m-n)`` (linearly by default, even for
    tanh), and the default gelu fit turns negative past ``x ≈ 4.6``; widen ``interval``
    when inputs go further (the fit over ``[-6, 6]`` has max error 3.5e-3 for gelu).

    For ``|x| > 1`` the polynomials are evaluated in ``(x/|x|, 1/|x|)`` (homogeneous
    Horner, then rescaled by ``|x|^(m-n)``), so large inputs never form ``x^m`` and stay
    finite in float16/bfloat16/float32. The ``|·|`` has gradient +1 at 0.

    Shapes:
        input ``(*)`` (with ``num_groups > 1``: channels ``C`` along ``channel_dim``,
        divisible by ``num_groups``) -> same shape.
    """

    def __init__(
        self,
        *,
        numerator_degree: int = 5,
        denominator_degree: int = 4,
        num_groups: int = 1,
        init: str = "leaky_relu",
        interval: Sequence[float] = (-3.0, 3.0),
        channel_dim: int = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("numerator_degree", numerator_degree, maximum=16)
        check_positive_int("denominator_degree", denominator_degree, maximum=16)
        check_positive_int("num_groups", num_groups)
        check_choice("init", init, RATIONAL_INITS)
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise SpecError(f"channel_dim={channel_dim!r} must be an integer")
        self.numerator_degree, self.denominator_degree = numerator_degree, denominator_degree
        self.num_groups, self.init, self.channel_dim = num_groups, init, channel_dim
        self.interval = _check_interval(interval)
        self._fit = fit_rational(init, numerator_degree, denominator_degree, self.interval)
        empty = functools.partial(torch.empty, device=device, dtype=dtype)
        self.numerator = nn.Parameter(empty(num_groups, numerator_degree + 1))
        self.denominator = nn.Parameter(empty(num_groups, denominator_degree))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every group gets the fitted coefficients (no randomness)."""
        with torch.no_grad():
            for param, values in zip((self.numerator, self.denominator), self._fit):
                param.copy_(torch.tensor(values, dtype=torch.float64).expand_as(param))

    def _split_groups(self, x: Tensor) -> int:
        """Validate ``x`` for ``num_groups > 1``; return the (non-negative) channel dim."""
        if x.dim() == 0 or not -x.dim() <= self.channel_dim < x.dim():
            raise ShapeError(
                f"channel_dim={self.channel_dim} is out of range for an input of shape "
                f"{tuple(x.shape)} (num_groups={self.num_groups} needs a channel dimension)"
            )
        dim = self.channel_dim % x.dim()
        if x.shape[dim] % self.num_groups:
            raise ShapeError(
                f"num_groups={self.num_groups} does not divide the {x.shape[dim]} channels of "
                f"dimension {dim} of the input {tuple(x.shape)}"
            )
        return dim

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.numerator.t(), self.denominator.t()  # (m+1, G), (n, G)
        if self.num_groups == 1:
            return self._rational(x, a[:, 0], b[:, 0])  # one scalar per power
        dim, g = self._split_groups(x), self.num_groups
        grouped = x.unflatten(dim, (g, x.shape[dim] // g))  # (..., G, C/G, ...)
        view = (-1, g) + (1,) * (grouped.dim() - dim - 1)  # (K, G, 1, ..., 1)
        return self._rational(grouped, a.reshape(view), b.reshape(view)).flatten(dim, dim + 1)

    def _rational(self, x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """``P(x) / (1 + |B(x)|)`` with coefficient rows ``a[j]``, ``b[k-1]`` broadcasting on x.

        Half-precision inputs are evaluated in float32 (the result is cast back): the
        intermediate gradients of the rescaled form reach ``~|x|``, past float16's range.
        """
        out_dtype = torch.promote_types(x.dtype, a.dtype)
        work = torch.promote_types(out_dtype, torch.float32)
        x, a, b = x.to(work), a.to(work), b.to(work)
        # Any s > 0 gives the same value (the rescaling cancels), so s carries no gradient.
        s = x.detach().abs().clamp(min=1)  # 1 on [-1, 1], where this is plain Horner
        u, w = x / s, s.reciprocal()  # |u| <= 1, 0 < w <= 1
        p = _horner(list(a), u, w)  # P(x) / s^m
        q = _horner(list(b), u, w) * u  # B(x) / s^n
        n = self.denominator_degree
        y = p / (w.pow(n) + _signed_abs(q)) * s.pow(self.numerator_degree - n)
        return y.to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"numerator_degree={self.numerator_degree}, "
            f"denominator_degree={self.denominator_degree}, num_groups={self.num_groups}, "
            f"init={self.init!r}, interval={self.interval}, channel_dim={self.channel_dim}"
        )

    @classmethod
    def example(cls) -> Example:
        return Example({"num_groups": 2, "init": "gelu"}, (example_tensor(2, 4, 5),))


