"""Flatten arbitrary module outputs to named tensors, compare them, and reduce them to a loss."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["flatten_tensors"]

Named = list[tuple[str, Tensor]]


def named_tensors(obj: Any, prefix: str = "output") -> Named:
    """``(path, tensor)`` for every tensor in ``obj``: tensors, tuples/lists, dicts,
    dataclasses and namedtuples, nested; anything else (``None``, numbers, text) is ignored."""
    if isinstance(obj, Tensor):
        return [(prefix, obj)]
    if isinstance(obj, Mapping):
        items = [(f"{prefix}[{k!r}]", v) for k, v in obj.items()]
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [(f"{prefix}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):
        items = [(f"{prefix}.{f}", getattr(obj, f)) for f in obj._fields]
    elif isinstance(obj, (tuple, list)):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(obj)]
    else:
        return []
    return [pair for path, value in items for pair in named_tensors(value, path)]


def flatten_tensors(obj: Any) -> list[Tensor]:
    """Every tensor in a module output (tensor, tuple/list, dict, dataclass, namedtuple)."""
    return [t for _, t in named_tensors(obj)]


def _is_float(t: Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _mismatch(
    name: str, ref: Tensor, got: Tensor, atol: float, rtol: float, scaled: bool
) -> str | None:
    r = ref.detach().cpu().to(torch.complex128 if ref.is_complex() else torch.float64)
    g = got.detach().cpu().to(r.dtype)
    if not torch.equal(r.isnan(), g.isnan()):
        return f"{name}: NaN in different places"
    if scaled:
        finite = r[r.isfinite()].abs()
        atol = atol * max(1.0, finite.max().item() if finite.numel() else 1.0)
    diff = (g - r).abs()
    ok = (r == g) | (diff <= atol + rtol * r.abs()) | r.isnan()
    if bool(ok.all()):
        return None
    bad = ~ok
    index = tuple(int(i) for i in bad.nonzero()[0])
    return (
        f"{name}: max abs diff {diff[bad].max().item():.3g} (allowed {atol:.3g} + {rtol:.3g}*|ref|)"
        f" at {int(bad.sum())}/{r.numel()} elements, first at index {index}"
    )


def compare_outputs(
    ref: Named,
    got: Named,
    *,
    atol: float,
    rtol: float,
    scaled: bool = False,
    floating_only: bool = False,
) -> str | None:
    """``None`` when ``got`` matches ``ref`` (NaN equals NaN), else why not.

    ``scaled`` multiplies ``atol`` by the largest finite ``|ref|`` (when above 1);
    ``floating_only`` ignores integer/bool outputs (argmax may flip in low precision).
    """
    if len(ref) != len(got):
        return f"{len(got)} output tensors, expected {len(ref)}"
    for (name, r), (_, g) in zip(ref, got):
        if r.shape != g.shape:
            return f"{name}: shape {tuple(g.shape)}, expected {tuple(r.shape)}"
        if _is_float(r):
            reason = _mismatch(name, r, g, atol, rtol, scaled)
            if reason:
                return reason
        elif not floating_only and not torch.equal(r.cpu(), g.cpu()):
            return f"{name}: integer values differ"
    return None


def projection_loss(tensors: Iterable[Tensor], seed: int = 0) -> Tensor:
    """``sum_k <t_k, w_k>`` with fixed random ``w_k``: a scalar whose gradient reaches every
    element (a plain sum would give zero gradients behind softmax or normalisation)."""
    gen = torch.Generator().manual_seed(seed)
    terms = [
        (t.float() * torch.randn(t.shape, generator=gen).to(t.device)).sum()
        for t in tensors
        if t.is_floating_point()
    ]
    return torch.stack(terms).sum()
