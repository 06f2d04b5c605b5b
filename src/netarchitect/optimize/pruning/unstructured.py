"""Unstructured magnitude pruning, made permanent: the smallest weights become exact zeros.

Unlike ``torch.nn.utils.prune`` no mask or ``*_orig`` copy is left behind: the result has
the same state-dict keys and shapes as the input (pytorch/pytorch#32928).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ._common import PruneError, check_amount

__all__ = ["SparsityReport", "prune_unstructured", "sparsity"]

_SCOPES = ("global", "layer")


@dataclass(frozen=True)
class SparsityReport:
    """Fraction of exact zeros: ``overall`` across the pruned weights and ``by_param``."""

    overall: float
    zeros: int
    total: int
    by_param: dict[str, float] = field(default_factory=dict)


def _prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of at least 2 dimensions (convolution and linear kernels, embeddings), once
    each (tied weights are counted once)."""
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.dim() >= 2 and p.is_floating_point() and id(p) not in seen:
            seen.add(id(p))
            out[name] = p
    return out


def sparsity(model: nn.Module) -> SparsityReport:
    """Sparsity of the weights :func:`prune_unstructured` prunes."""
    by_param, zeros, total = {}, 0, 0
    for name, p in _prunable(model).items():
        z = int((p == 0).sum())
        by_param[name] = z / p.numel()
        zeros, total = zeros + z, total + p.numel()
    return SparsityReport(zeros / total if total else 0.0, zeros, total, by_param)


def _threshold_mask(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Boolean mask keeping all but the ``n_prune`` smallest scores (ties broken by index)."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        mask[torch.argsort(scores.flatten(), stable=True)[:n_prune]] = False
    return mask.view_as(scores)


def prune_unstructured(
    model: nn.Module, amount: float, *, scope: str = "global", inplace: bool = False
) -> tuple[nn.Module, SparsityReport]:
    """Zero the ``amount`` fraction of smallest-magnitude weights (``|w|``).

    ``scope="global"`` ranks all weights of >= 2 dimensions together, ``"layer"`` prunes
    each weight tensor by ``amount``. Returns ``(model, sparsity)``; the input model is
    copied unless ``inplace``. Biases and norm parameters are left dense.
    """
    amount = check_amount(amount)
    if scope not in _SCOPES:
        raise PruneError(f"scope={scope!r} must be one of {list(_SCOPES)}")
    if not inplace:
        model = copy.deepcopy(model)
    weights = _prunable(model)
    if not weights:
        raise PruneError(f"{type(model).__name__} has no weight of 2 or more dimensions to prune")
    with torch.no_grad():
        if scope == "global":
            scores = torch.cat([p.detach().abs().flatten().float() for p in weights.values()])
            mask = _threshold_mask(scores, round(amount * scores.numel()))
            for p, m in zip(weights.values(), mask.split([p.numel() for p in weights.values()])):
                p.mul_(m.view_as(p).to(p.dtype))
        else:
            for p in weights.values():
                mask = _threshold_mask(p.detach().abs().float(), round(amount * p.numel()))
                p.mul_(mask.to(p.dtype))
    return model, sparsity(model)
