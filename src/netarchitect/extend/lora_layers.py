"""The LoRA mechanism: a low-rank delta on any weight tensor, and the module it rides on.

One idea for every layer type. A weight ``W`` is viewed as a matrix ``M`` of shape
``(W.shape[0], -1)`` (``Wᵀ`` for transformers' ``Conv1D``, whose weight is stored
input-first); the update is ``ΔM = B A`` with ``B: (rows, r)`` zero-initialised and
``A: (r, cols)`` Kaiming-uniform (as PEFT), scaled by ``s = α / r`` (rsLoRA: ``α / √r``):
``W' = W + s · reshape(B A)``. For a Linear this is ``W + s B A``; for a Conv the rows are
output channels and the columns ``in/groups × kernel`` (PEFT's conv LoRA); for an
Embedding rows are tokens; for LSTM/GRU/RNN every ``weight_ih_l*``/``weight_hh_l*``
matrix; for Bilinear ``(out, in1·in2)``. **Stacked expert weights** ``(E, out, in)`` (a module
whose class name ends in ``Experts``, as transformers' Mixtral/Qwen-MoE) get one update
per expert, ``ΔW_e = B_e A_e``.
**Vectors** (norms' affine weights, LayerScale) get a *full* zero-initialised delta
``W' = W + s · δ`` (a rank-1 update of a vector is no cheaper than the vector itself),
so ``rank`` does not apply to them.

DoRA (Liu et al. 2024): ``W' = m ⊙ (W + s ΔW) / ‖W + s ΔW‖`` with one norm (and one
magnitude ``m``, initialised to ``‖W‖``) per row of ``M`` — per output feature of a
Linear, per output channel of a Conv (clamped at :data:`NORM_EPS`). As in the paper (§4.3) and PEFT, the norm is
detached from the graph (a constant in the backward pass).

Forward: a :class:`LoRAHost` module (its class is swapped in place for a subclass, so
its own parameter names are unchanged and adapters appear as ``lora_adapters.*``)
runs a fast path for Linear, Conv1d/2d/3d (``groups=1``, zero padding), transformers'
``Conv1D`` and Embedding — ``y = f(x) + s · B(A(dropout(x)))``, never forming ``ΔW`` — and
for every other layer computes ``W'`` and runs the layer's own forward with it
(``dropout`` does not apply there: there is no separate input path to drop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.stateless import _reparametrize_module

from ..errors import NetArchitectError, ShapeError, SpecError

__all__ = ["AdapterShapeError", "LoRADelta", "LoRAHost", "LoRAStateError", "LoRATargetError"]


#: DoRA's norms are clamped here, so an all-zero row (an embedding's padding row) stays zero.
NORM_EPS = 1e-12


class LoRATargetError(SpecError):
    """A LoRA target is wrong: it matches nothing, has an unsupported type or too small dims."""


class LoRAStateError(NetArchitectError):
    """A LoRA operation does not fit the model's state (merging twice, no adapters, ...)."""


class AdapterShapeError(ShapeError):
    """Saved adapters do not fit the model they are loaded into."""


class LoRADelta(nn.Module):
    """The update of one weight: ``B A`` (or a full vector delta), its scale and DoRA magnitude.

    ``shape`` is the shape of the adapted weight (the slice ``rows`` of it, if given);
    ``transpose`` views it as ``Wᵀ`` (input-first storage).

    Shapes:
        A: (rank, cols); B: (rows, rank); full (vector weights): shape; magnitude: (rows,).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        rank: int,
        *,
        alpha: float,
        rslora: bool = False,
        dora: bool = False,
        dropout: float = 0.0,
        transpose: bool = False,
        rows: tuple[int, int] | None = None,
        stacked: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.shape, self.rank, self.alpha = tuple(shape), int(rank), float(alpha)
        self.rslora, self.transpose, self.rows = bool(rslora), bool(transpose), rows
        self.scale = self.alpha / (math.sqrt(rank) if rslora else rank)
        self.drop = nn.Dropout(dropout) if dropout else None
        self.A: nn.Parameter | None = None
        self.B: nn.Parameter | None = None
        self.full: nn.Parameter | None = None
        self.magnitude: nn.Parameter | None = None
        self.stacked = bool(stacked)
        if len(shape) == 1:
            self.full = nn.Parameter(torch.zeros(shape, **factory))
        elif stacked:  # (E, out, in): one low-rank update per expert
            n_experts, n_rows, n_cols = shape
            self.A = nn.Parameter(torch.empty(n_experts, rank, n_cols, **factory))
            self.B = nn.Parameter(torch.zeros(n_experts, n_rows, rank, **factory))
            for a in self.A:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            if dora:
                self.magnitude = nn.Parameter(torch.ones(n_experts, n_rows, **factory))
        else:
            n_rows, n_cols = matrix_shape(shape, transpose)
            self.A = nn.Parameter(torch.empty(rank, n_cols, **factory))
            self.B = nn.Parameter(torch.zeros(n_rows, rank, **factory))
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            if dora:
                self.magnitude = nn.Parameter(torch.ones(n_rows, **factory))
        self._gain: Tensor | None = None  # DoRA's factor at merge time (to unmerge)
        self.site: Any = None  # the LoRASite it was made for (set by install)

    @property
    def dora(self) -> bool:
        return self.magnitude is not None

    def down(self, x: Tensor) -> Tensor:
        """``s · A(dropout(x))`` for a Linear-like input ``(*, cols)``: the scale is applied to
        the rank-``r`` features, the cheapest place."""
        assert self.A is not None
        return F.linear(x if self.drop is None else self.drop(x), self.A) * self.scale

    def init_magnitude(self, weight: Tensor) -> None:
        """DoRA: ``m = ‖W‖`` per row, so the adapted layer starts equal to the base."""
        if self.magnitude is not None:
            with torch.no_grad():
                self.magnitude.copy_(self._norms(weight))

    def _norms(self, w: Tensor) -> Tensor:
        """One norm per output row (per expert and output for stacked weights)."""
        return w.norm(dim=-1) if self.stacked else self.as_matrix(w).norm(dim=1)

    def as_matrix(self, w: Tensor) -> Tensor:
        """``w`` (this delta's weight layout) as the (rows, cols) matrix the update lives in."""
        return w.t() if self.transpose else w.reshape(w.shape[0], -1)

    def from_matrix(self, m: Tensor) -> Tensor:
        return m.t() if self.transpose else m.reshape(self.shape)

    def delta(self) -> Tensor:
        """``ΔW`` in the weight's layout, unscaled."""
        if self.full is not None:
            return self.full
        assert self.A is not None and self.B is not None
        if self.stacked:
            return self.B @ self.A  # (E, out, in)
        return self.from_matrix(self.B @ self.A)

    def gain(self, adapted: Tensor) -> Tensor:
        """DoRA's ``m / ‖W + sΔW‖`` (detached norm) shaped to broadcast over ``adapted``."""
        assert self.magnitude is not None
        g = self.magnitude / self._norms(adapted).detach().clamp_min(NORM_EPS)
        if self.stacked:
            return g[..., None]
        if self.transpose:
            return g[None, :]
        return g.view(-1, *([1] * (adapted.dim() - 1)))

    def adapted(self, weight: Tensor) -> Tensor:
        """``W'`` for the full weight ``weight`` (only ``rows`` change when a slice is set)."""
        part = weight if self.rows is None else weight[self.rows[0] : self.rows[1]]
        new = part + self.scale * self.delta().to(part.dtype)
        if self.magnitude is not None:
            new = new * self.gain(new)
        if self.rows is None:
            return new
        return torch.slice_scatter(weight, new, 0, self.rows[0], self.rows[1])

    @torch.no_grad()
    def merge_into(self, weight: Tensor) -> None:
        part = weight if self.rows is None else weight[self.rows[0] : self.rows[1]]
        new = part + self.scale * self.delta().to(part.dtype)
        if self.magnitude is not None:
            self._gain = self.gain(new)
            new = new * self._gain
        part.copy_(new)

    @torch.no_grad()
    def unmerge_from(self, weight: Tensor) -> None:
        part = weight if self.rows is None else weight[self.rows[0] : self.rows[1]]
        if self._gain is not None:
            part.div_(self._gain)
            self._gain = None
        part.sub_(self.scale * self.delta().to(part.dtype))

    def extra_repr(self) -> str:
        kind = "full" if self.full is not None else f"rank={self.rank}"
        extra = ", dora" if self.dora else ""
        return f"{kind}, scale={self.scale:g}{extra}" + (f", rows={self.rows}" if self.rows else "")


def matrix_shape(shape: tuple[int, ...], transpose: bool = False) -> tuple[int, int]:
    """(rows, cols) of the matrix view of a weight of ``shape``."""
    if transpose:
        return shape[1], shape[0]
    return shape[0], math.prod(shape[1:])


def _conv_fn(module: nn.Module) -> Callable[..., Tensor]:
    return (F.conv1d, F.conv2d, F.conv3d)[len(module.kernel_size) - 1]  # type: ignore[arg-type]


class LoRAHost:
    """Mixin put in front of an adapted module's class (``module.__class__`` is swapped).

    ``lora_adapters`` maps a key (the parameter name, ``.`` replaced by ``__``; a row
    slice adds ``@start_stop``) to its :class:`LoRADelta`. ``lora_kind`` picks the fast
    path (``"linear"``, ``"conv"``, ``"embedding"``, ``"hf_conv1d"``) or ``"generic"``.
    """

    lora_adapters: nn.ModuleDict
    lora_kind: str
    lora_merged: bool
    lora_base_class: type

    @property
    def lora_active(self) -> bool:
        return not self.lora_merged and len(self.lora_adapters) > 0

    def lora_targets(self) -> Iterator[tuple[str, LoRADelta]]:
        """(parameter name, delta) pairs."""
        for key, d in self.lora_adapters.items():
            yield key.split("@")[0].replace("__", "."), d  # type: ignore[misc]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.lora_active:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        fast = getattr(self, f"_lora_{self.lora_kind}", None)
        if fast is not None:
            return fast(*args, **kwargs)
        with self.lora_weights() as weights, _reparametrize_module(self, weights):  # type: ignore[arg-type]
            return super().forward(*args, **kwargs)  # type: ignore[misc]

    @contextmanager
    def lora_weights(self) -> Iterator[dict[str, Tensor]]:
        """The adapted weights ``{name: W'}`` (several deltas on one weight compose)."""
        weights: dict[str, Tensor] = {}
        for name, d in self.lora_targets():
            base = weights.get(name)
            if base is None:
                base = self.get_parameter(name)  # type: ignore[attr-defined]
            weights[name] = d.adapted(base)
        yield weights

    def _single(self) -> LoRADelta:
        return self.lora_adapters["weight"]  # type: ignore[return-value]

    def _lora_linear(self, x: Tensor) -> Tensor:
        d, weight = self._single(), self.weight  # type: ignore[attr-defined]
        assert d.A is not None and d.B is not None
        lora = F.linear(d.down(x), d.B)
        if d.magnitude is None:
            return super().forward(x) + lora  # type: ignore[misc]
        g = d.gain(weight + d.scale * (d.B @ d.A)).squeeze(1)
        out = g * (F.linear(x, weight) + lora)
        return out if self.bias is None else out + self.bias  # type: ignore[attr-defined]

    def _lora_hf_conv1d(self, x: Tensor) -> Tensor:
        d = self._single()
        assert d.A is not None and d.B is not None
        return super().forward(x) + F.linear(d.down(x), d.B)  # type: ignore[misc]

    def _lora_conv(self, x: Tensor) -> Tensor:
        me: Any = self
        d, conv, weight = self._single(), _conv_fn(me), me.weight
        assert d.A is not None and d.B is not None
        nd = weight.dim() - 2
        a = d.A.view(d.rank, *weight.shape[1:])  # (r, in, *k)
        b = d.B.view(*d.B.shape, *([1] * nd))  # (out, r, 1, ...)
        h = conv(x if d.drop is None else d.drop(x), a, None, me.stride, me.padding, me.dilation)
        lora = conv(h, b) * d.scale
        if d.magnitude is None:
            return super().forward(x) + lora  # type: ignore[misc]
        g = d.gain(weight + d.scale * d.delta()).view(1, -1, *([1] * nd))
        out = g * (me._conv_forward(x, weight, None) + lora)
        bias = me.bias
        return out if bias is None else out + bias.view(1, -1, *([1] * nd))

    def _lora_embedding(self, x: Tensor) -> Tensor:
        d = self._single()
        assert d.A is not None and d.B is not None
        rows = F.embedding(x, d.B, self.padding_idx, self.max_norm, self.norm_type,  # type: ignore[attr-defined]
                           self.scale_grad_by_freq, self.sparse)  # type: ignore[attr-defined]
        return super().forward(x) + (rows @ d.A) * d.scale  # type: ignore[misc]


class UnfusedQKV:
    """Mixin for our MultiHeadAttention: while a q/k/v projection carries an active LoRA
    fast path, run the three projections apart (the fused matmul reads the raw weights)."""

    lora_base_class: type

    def _plain_projections(self) -> bool:
        projs = (self.q_proj, self.k_proj, self.v_proj)  # type: ignore[attr-defined]
        if any(isinstance(p, LoRAHost) and p.lora_active for p in projs):
            return False
        return super()._plain_projections()  # type: ignore[misc]


_CLASSES: dict[tuple[type, type], type] = {}


def swap_class(module: nn.Module, mixin: type, prefix: str) -> None:
    """Put ``mixin`` in front of ``module``'s class (once; cached per class)."""
    cls = type(module)
    if issubclass(cls, mixin):
        return
    key = (mixin, cls)
    if key not in _CLASSES:
        new = type(prefix + cls.__name__, (mixin, cls), {"lora_base_class": cls})
        new.__module__ = cls.__module__
        _CLASSES[key] = new
    module.__class__ = _CLASSES[key]


def restore_class(module: nn.Module) -> None:
    """Undo :func:`swap_class`."""
    base = getattr(type(module), "lora_base_class", None)
    if base is not None:
        module.__class__ = base
