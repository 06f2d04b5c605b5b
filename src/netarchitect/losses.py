"""Losses for every head: ``get_loss(name, **options)`` returns ``loss(outputs, targets)``.

``cross_entropy`` (label smoothing), ``bce`` (multi-label), ``asymmetric`` (multi-label,
Ridnik et al. 2021), ``mse``, ``huber``, ``gaussian_nll`` (for ``gaussian_head``),
``ordinal`` (for ``ordinal_head``). Each is a mean over samples (and targets).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import NetArchitectError
from .registry import suggest

__all__ = [
    "LOSSES",
    "asymmetric_loss",
    "gaussian_nll",
    "get_loss",
    "ordinal_loss",
]

Loss = Callable[[Tensor, Tensor], Tensor]


def gaussian_nll(out: Tensor, target: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``target`` under ``N(mean, var)``, with ``out`` the
    ``(*, 2k)`` means-then-variances of a ``gaussian_head`` (constant ``½ log 2π`` included)."""
    mean, var = out.chunk(2, dim=-1)
    if target.shape != mean.shape:
        raise ValueError(f"targets: shape {tuple(target.shape)}, expected {tuple(mean.shape)}")
    nll = 0.5 * (var.log() + (target - mean).square() / var + math.log(2 * math.pi))
    return nll.mean()


def ordinal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cumulative-link loss: binary cross-entropy of each ``P(y > k)`` logit of an
    ``ordinal_head`` against ``[target > k]``, averaged over thresholds and samples."""
    k = torch.arange(logits.shape[-1], device=logits.device)
    above = (target[..., None] > k).to(logits.dtype)  # (*, K-1)
    return F.binary_cross_entropy_with_logits(logits, above)


def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    """Asymmetric loss for multi-label classification (Ridnik et al., 2021):
    ``−y (1−p)^γ₊ log p − (1−y) p_m^γ₋ log(1−p_m)`` with the shifted probability
    ``p_m = max(p − clip, 0)``; ``γ₊ = γ₋ = clip = 0`` is binary cross-entropy."""
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp_min(0) if clip > 0 else p
    pos = target * (1 - p).pow(gamma_pos) * p.clamp_min(eps).log()
    neg = (1 - target) * p_neg.pow(gamma_neg) * (1 - p_neg).clamp_min(eps).log()
    return -(pos + neg).mean()


def _cross_entropy(out: Tensor, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(out, target, label_smoothing=label_smoothing)


def _bce(out: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(out, target.to(out.dtype))


def _mse(out: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(out, target)


def _huber(out: Tensor, target: Tensor, *, delta: float = 1.0) -> Tensor:
    return F.huber_loss(out, target, delta=delta)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "cross_entropy": _cross_entropy,
    "bce": _bce,
    "asymmetric": asymmetric_loss,
    "mse": _mse,
    "huber": _huber,
    "gaussian_nll": gaussian_nll,
    "ordinal": ordinal_loss,
}


def get_loss(name: str, **options: float) -> Loss:
    """The loss ``name`` with its ``options`` bound (``get_loss("huber", delta=0.5)``)."""
    if name not in LOSSES:
        raise NetArchitectError(
            f"unknown loss {name!r}{suggest(name, LOSSES)}; use one of {', '.join(LOSSES)}"
        )
    fn = LOSSES[name]
    accepted = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise NetArchitectError(
            f"loss {name!r} takes no option(s) {unknown}; it takes {accepted or 'none'}"
        )
    return functools.partial(fn, **options) if options else fn
