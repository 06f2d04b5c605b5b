"""The formula registry shared by the FLOP formula modules, and their common helpers.

A formula is ``fn(args, out) -> (macs, other_flops)`` where ``args`` maps the ATen
schema's argument names to the call's values (defaults filled in, plus ``_name``, the
operator's base name, and ``_input``, its first argument).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__: list[str] = []  # private module

Cost = tuple[int, int]
"""``(macs, other_flops)`` of one operator call."""

Formula = Callable[[dict[str, Any], Any], Cost]

SOFTMAX = 5
SOFTMAX_BACKWARD = 4
NORM = 5
NORM_RUNNING_STATS = 2
RMS_NORM = 4
LOSS = 3
LOSS_BACKWARD = 2
UPSAMPLE = {"linear1d": 3, "bilinear2d": 7, "bicubic2d": 31, "trilinear3d": 15}

FORMULAS: dict[str, Formula] = {}
"""ATen base name (``addmm``) -> formula."""


def formula(*names: str) -> Callable[[Formula], Formula]:
    """Register ``fn(args, out) -> (macs, other)`` for the given ATen operator names."""

    def register(fn: Formula) -> Formula:
        for name in names:
            FORMULAS[name] = fn
        return fn

    return register


def numel(x: Any) -> int:
    """Elements of a tensor or of every tensor in a (nested) list/tuple."""
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, (list, tuple)):
        return sum(numel(item) for item in x)
    return 0


def first(out: Any) -> torch.Tensor:
    """The tensor itself, or the first element of a tuple of outputs."""
    return out if isinstance(out, torch.Tensor) else out[0]


def prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def elementwise(a: dict[str, Any], out: Any) -> Cost:
    """One other FLOP per output element."""
    return 0, numel(out)


def reduction(a: dict[str, Any], out: Any) -> Cost:
    """One other FLOP per input element."""
    return 0, numel(a["_input"])


def bias_cost(a: dict[str, Any], out: Any, name: str = "bias") -> int:
    """One add per output element when the ``name`` argument is given."""
    return numel(out) if a.get(name) is not None else 0
