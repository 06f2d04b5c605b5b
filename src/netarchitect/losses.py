"""Losses for every head: ``get_loss(name, **options)`` returns ``loss(outputs, targets)``.

``cross_entropy`` (label smoothing), ``bce`` (multi-label), ``asymmetric`` (multi-label,
Ridnik et al. 2021), ``mse``, ``huber``, ``gaussian_nll`` (for ``gaussian_head``),
``ordinal`` (for ``ordinal_head``), ``pixel_cross_entropy`` and ``dice`` (segmentation
logits ``(B, K, H, W)`` against class indices ``(B, H, W)``, for ``fpn_head``). Each is a
mean over samples (and targets, pixels).

Blocks that need a term beside the task's loss (ProtoPNet's cluster/separation costs, a
concept bottleneck's concept loss) expose ``auxiliary_loss(targets) -> Tensor``;
:func:`auxiliary_loss` sums those of a model, and every trainer adds it to each step.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import NetArchitectError, ShapeError
from .registry import suggest

__all__ = [
    "LOSSES",
    "asymmetric_loss",
    "auxiliary_loss",
    "auxiliary_modules",
    "check_dense_targets",
    "dice_loss",
    "gaussian_nll",
    "get_loss",
    "ordinal_loss",
    "pixel_cross_entropy",
]

Loss = Callable[[Tensor, Tensor], Tensor]


def auxiliary_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules of ``model`` that define ``auxiliary_loss(targets)`` (found once, before
    a training loop)."""
    return [m for m in model.modules()
            if m is not model and callable(getattr(m, "auxiliary_loss", None))]


def auxiliary_loss(
    model: torch.nn.Module, targets: Tensor, modules: list[torch.nn.Module] | None = None
) -> Tensor:
    """Sum of ``m.auxiliary_loss(targets)`` over ``modules`` (default: found in ``model``),
    recorded by their last training forward; a zero scalar when there are none."""
    terms = [m.auxiliary_loss(targets) for m in
             (auxiliary_modules(model) if modules is None else modules)]
    if not terms:
        return torch.zeros((), device=targets.device)
    return torch.stack([t.to(terms[0].device) for t in terms]).sum()


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


def check_dense_targets(logits: Tensor, target: Tensor) -> None:
    """Segmentation logits ``(B, K, H, W)`` and class indices ``(B, H, W)``, or a ShapeError."""
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ShapeError(
            f"targets: shape {tuple(target.shape)} for logits {tuple(logits.shape)}; "
            "expected class indices (B, H, W) for logits (B, K, H, W)"
        )


def pixel_cross_entropy(
    logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0, ignore_index: int = -100
) -> Tensor:
    """Cross-entropy averaged over every pixel not labelled ``ignore_index``."""
    check_dense_targets(logits, target)
    return F.cross_entropy(
        logits, target, label_smoothing=label_smoothing, ignore_index=ignore_index
    )


def dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss (Milletari et al. 2016): ``1 − (2 Σ p·y + s) / (Σ p + Σ y + s)`` per
    class over the batch (``p`` softmax probabilities, ``y`` one-hot targets), averaged over
    classes."""
    check_dense_targets(logits, target)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


LOSSES: dict[str, Callable[..., Tensor]] = {
    "cross_entropy": _cross_entropy,
    "bce": _bce,
    "asymmetric": asymmetric_loss,
    "mse": _mse,
    "huber": _huber,
    "gaussian_nll": gaussian_nll,
    "ordinal": ordinal_loss,
    "pixel_cross_entropy": pixel_cross_entropy,
    "dice": dice_loss,
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
