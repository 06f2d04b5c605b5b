"""Importance of every unit of every channel group: L1/L2 magnitude, BN scale, or
first-order Taylor (``|Σ w · ∂L/∂w|``, Molchanov et al., 2019).

A unit's score sums its contributions over every labelled dimension of every weight (not
bias) of its group — the producing filters and the consuming input slices alike — as
Torch-Pruning's group-level magnitude importance does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from ._common import PruneError
from .dependency import ChannelGraph, Dim

__all__ = ["CRITERIA", "group_scores", "taylor_grads"]

CRITERIA = ("l1", "l2", "bn_scale", "taylor")


def _per_index(t: Tensor, dim: int, criterion: str) -> Tensor:
    rows = t.detach().float().cpu().movedim(dim, 0).reshape(t.shape[dim], -1)
    if criterion == "l2":
        return rows.pow(2).sum(1)
    if criterion == "taylor":
        return rows.sum(1).abs()
    return rows.abs().sum(1)


def _add(graph: ChannelGraph, scores: dict[int, Tensor], d: Dim, per_index: Tensor) -> None:
    """Accumulate a dimension's per-index scores into the units of its spaces."""
    sizes = []
    for s in d.chan:
        space = graph.spaces[s]
        sizes.append(space.size // space.groups if d.local else space.size)
    parts = per_index.reshape(-1, d.inner).sum(1).split(sizes)
    for s, part in zip(d.chan, parts, strict=True):
        root = graph.find(s)
        if d.local:  # a grouped conv's input slice counts for that position in every group
            part = part.repeat(graph.spaces[s].groups)
        scores[root] = scores.get(root, torch.zeros_like(part)) + part


def group_scores(
    model: nn.Module,
    graph: ChannelGraph,
    criterion: str = "l1",
    grads: dict[str, Tensor] | None = None,
) -> dict[int, Tensor]:
    """Root space -> score of each of its units (higher: more important)."""
    if criterion not in CRITERIA:
        raise PruneError(f"criterion={criterion!r} must be one of {list(CRITERIA)}")
    params = dict(model.named_parameters(remove_duplicate=False))
    norms = {
        f"{name}.weight"
        for name, m in model.named_modules(remove_duplicate=False)
        if isinstance(m, nn.modules.batchnorm._NormBase)
    }
    l1: dict[int, Tensor] = {}
    chosen: dict[int, Tensor] = {}
    for key, dims in graph.labels.items():
        p = params.get(key)
        if p is None or key.endswith("bias"):  # weights only, as Torch-Pruning's default
            continue
        for dim, d in dims.items():
            _add(graph, l1, d, _per_index(p, dim, "l1"))
            if criterion == "bn_scale":
                if key in norms:
                    _add(graph, chosen, d, p.detach().float().cpu().abs())
            elif criterion == "taylor":
                if grads is None or key not in grads:
                    raise PruneError("criterion='taylor' needs data= (batches to take gradients)")
                _add(graph, chosen, d, _per_index(p.detach() * grads[key], dim, "taylor"))
            elif criterion == "l2":
                _add(graph, chosen, d, _per_index(p, dim, "l2"))
    return {root: chosen.get(root, l1[root]) for root in l1}


def taylor_grads(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
    max_batches: int = 8,
) -> dict[str, Tensor]:
    """Summed gradients of the loss over up to ``max_batches`` batches ``(inputs, target)``
    (``loss_fn(output, target)``, cross-entropy by default), on a copy of ``model``."""
    work = copy.deepcopy(model)
    work.zero_grad(set_to_none=True)
    loss_fn = loss_fn or cross_entropy
    n = 0
    for n, batch in enumerate(data, 1):
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise PruneError("data= must yield (inputs, target) pairs")
        x, y = batch
        out = work(*x) if isinstance(x, tuple | list) else work(x)
        loss_fn(out, y).backward()
        if n >= max_batches:
            break
    if n == 0:
        raise PruneError("data= yielded no batch")
    return {
        k: p.grad.detach() if p.grad is not None else torch.zeros_like(p)
        for k, p in work.named_parameters(remove_duplicate=False)
    }
