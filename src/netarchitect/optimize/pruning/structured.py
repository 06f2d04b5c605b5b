"""Structured pruning of spec-built networks: a new, smaller, valid spec plus the surviving
weights.

:func:`plan_pruning` traces the coupled dimensions (:mod:`.dependency`), scores them
(:mod:`.importance`), picks the units to keep in every group, rewrites the spec and checks
it on the ``meta`` device; :func:`apply_plan` builds the new network and copies the kept
slices. Nothing is written to the input model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import NetArchitectError
from ...network import Network, build, infer_shapes
from ...spec import NetworkSpec
from ._common import PruneError, check_amount, check_round_to
from .dependency import ChannelGraph, Dim, build_graph
from .importance import group_scores, taylor_grads

__all__ = ["GroupPlan", "PrunePlan", "apply_plan", "plan_pruning", "zero_pruned"]


@dataclass(frozen=True)
class GroupPlan:
    """One group of coupled spaces: its size, what it keeps, and why it is frozen."""

    owners: tuple[str, ...]
    size: int
    kept: int
    frozen: str | None


@dataclass
class PrunePlan:
    """The new ``spec`` (``None`` for a plain module) and, per state-dict key, the indices
    kept along each dimension; for a plain module, the ``modules`` to resize and the
    ``heads`` each ``nn.MultiheadAttention`` keeps."""

    spec: NetworkSpec | None
    indices: dict[str, dict[int, Tensor]]
    groups: list[GroupPlan] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)


def _planned_keep(graph: ChannelGraph, root: int, amount: float, round_to: int = 1) -> int:
    """Units a group keeps: ``size - round(size · amount)``, in whole steps of the group's
    constraints and ``round_to`` (at least one step; never more than ``size``)."""
    space = graph.spaces[root]
    if graph.frozen(root) or amount == 0:
        return space.size
    step = math.lcm(space.multiple, space.groups, round_to)
    keep = space.size - round(space.size * amount)
    if keep >= 1:  # whole steps, at least one
        keep = min(space.size, max(step, round(keep / step) * step))
    if keep < 1:
        owners = sorted({graph.spaces[s].owner for s in graph.groups()[root]})
        raise PruneError(
            f"pruning {amount:.0%} of the {space.size} channels of {owners} would leave "
            "none; use a smaller amount"
        )
    return keep


def _actual_sizes(graph: ChannelGraph, new: nn.Module) -> dict[int, int]:
    """Units each group has in the rebuilt network (blocks may derive widths themselves)."""
    shapes = {k: tuple(v.shape) for k, v in new.state_dict(keep_vars=True).items()}
    sizes: dict[int, int] = {}
    for key, dims in graph.labels.items():
        if key not in shapes:
            continue
        for dim, d in dims.items():
            if len(d.chan) != 1:
                continue
            root, space = graph.find(d.chan[0]), graph.spaces[d.chan[0]]
            units = shapes[key][dim] // d.inner * (space.groups if d.local else 1)
            if sizes.setdefault(root, units) != units:
                raise PruneError(
                    f"{key}: the rebuilt network has {units} units where the coupled "
                    f"dimensions have {sizes[root]}; its block derives widths differently"
                )
    return sizes


def _select(scores: Tensor, keep: int, groups: int) -> Tensor:
    """Indices of the ``keep`` best units; with ``groups`` > 1 the same positions are kept
    in every group (so a grouped convolution's input slices stay aligned)."""
    if keep >= scores.numel():
        return torch.arange(scores.numel())
    local = scores.view(groups, -1).sum(0)
    top = torch.topk(local, keep // groups).indices.sort().values
    return (torch.arange(groups)[:, None] * local.numel() + top[None, :]).flatten()


def _dim_indices(graph: ChannelGraph, d: Dim, kept: dict[int, Tensor]) -> Tensor:
    parts, offset = [], 0
    for s in d.chan:
        space = graph.spaces[s]
        idx = kept[graph.find(s)]
        if d.local:
            per = space.size // space.groups
            idx, size = idx[idx < per], per
        else:
            size = space.size
        if d.inner > 1:
            idx = (idx[:, None] * d.inner + torch.arange(d.inner)[None, :]).flatten()
        parts.append(idx + offset)
        offset += size * d.inner
    return torch.cat(parts)


def _check_network(model: nn.Module) -> Network:
    if not isinstance(model, Network):
        raise PruneError(
            f"{type(model).__name__} is not a spec-built Network; structured pruning of other "
            "modules goes through prune(..., example_inputs=...) (torch.fx)"
        )
    return model


def plan_pruning(
    model: nn.Module,
    amount: float,
    *,
    criterion: str = "l1",
    data: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
    round_to: int = 1,
) -> PrunePlan:
    """Plan structured pruning of ``amount`` of the units of every prunable group; kept
    counts are multiples of ``round_to`` (8 or 16 suit vector units) where a group allows."""
    amount = check_amount(amount)
    round_to = check_round_to(round_to)
    net = _check_network(model)
    spec = net.spec
    graph = build_graph(net, spec, infer_shapes(spec))
    grads = taylor_grads(net, data, loss_fn) if criterion == "taylor" and data is not None else None
    scores = group_scores(net, graph, criterion, grads)
    groups = graph.groups()
    prunable = [r for r in groups if not graph.frozen(r)]
    if not prunable:
        reasons = sorted({graph.frozen(r) or "" for r in groups})
        raise PruneError(f"{spec.name}: no prunable dimension; every group is kept: {reasons}")
    keep = {root: _planned_keep(graph, root, amount, round_to) for root in groups}

    def keep_of(chan: tuple[int, ...]) -> int:
        return sum(keep[graph.find(s)] for s in chan)

    new_spec = spec
    for node_id, respec in graph.respec.items():
        new_spec = new_spec.replace_node(node_id, params=respec(keep_of))
    try:
        meta = build(new_spec, device="meta")
    except NetArchitectError as exc:
        raise PruneError(f"{spec.name}: the pruned spec is invalid: {exc}") from exc
    old_keys = set(net.state_dict().keys())
    new_keys = set(meta.state_dict().keys())
    if old_keys != new_keys:
        nodes = sorted({k.split(".")[1] for k in old_keys ^ new_keys})
        blocks = sorted({spec.node(n).block for n in nodes})
        raise PruneError(
            f"{spec.name}: the pruned widths change the layers of node(s) {nodes} "
            f"({', '.join(blocks)}; e.g. a projection shortcut whose input and output widths "
            "become equal); try another amount or round_to"
        )
    actual = _actual_sizes(graph, meta)
    kept: dict[int, Tensor] = {}
    plans = []
    for root, members in groups.items():
        space = graph.spaces[root]
        n = actual.get(root, keep[root])
        if n > space.size or n < 1:
            raise PruneError(f"{spec.name}: a group of {space.size} units would get {n}")
        kept[root] = _select(scores.get(root, torch.zeros(space.size)), n, space.groups)
        owners = tuple(sorted({graph.spaces[s].owner for s in members}))
        plans.append(GroupPlan(owners, space.size, n, graph.frozen(root)))
    indices = {
        key: {dim: _dim_indices(graph, d, kept) for dim, d in dims.items()}
        for key, dims in graph.labels.items()
    }
    _check_shapes(net, meta, indices)
    return PrunePlan(new_spec, indices, plans)


def _check_shapes(old: nn.Module, new: nn.Module, indices: dict[str, dict[int, Tensor]]) -> None:
    """Every tensor of the rebuilt network has the shape its kept slices give."""
    new_state = new.state_dict()
    for key, t in old.state_dict().items():
        shape = list(t.shape)
        for dim, idx in indices.get(key, {}).items():
            shape[dim] = len(idx)
        if tuple(new_state[key].shape) != tuple(shape):
            raise PruneError(
                f"{key}: the pruned spec gives shape {tuple(new_state[key].shape)} but the kept "
                f"slices give {tuple(shape)}; the pruning rule of node {key.split('.')[1]!r} "
                "does not match its block"
            )


def _sliced_state(model: nn.Module, plan: PrunePlan) -> dict[str, Tensor]:
    out = {}
    for key, t in model.state_dict().items():
        for dim, idx in plan.indices.get(key, {}).items():
            t = t.index_select(dim, idx.to(t.device))
        out[key] = t
    return out


def apply_plan(model: nn.Module, plan: PrunePlan) -> Network:
    """The network of ``plan.spec`` with the kept slices of ``model``'s weights."""
    if plan.spec is None:
        raise PruneError("this plan is for a plain module: use fx_graph.prune_module")
    ref = next(iter(model.parameters()))
    new = build(plan.spec, device=ref.device, dtype=ref.dtype, seed=0)
    new.load_state_dict(_sliced_state(model, plan), strict=True)
    new.train(model.training)
    return new


def zero_pruned(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """A copy of ``model`` whose pruned slices are zero (every labelled dimension): its
    output equals the pruned network's when the pruned units contribute nothing."""
    out = copy.deepcopy(model)
    state = out.state_dict()
    with torch.no_grad():
        for key, dims in plan.indices.items():
            t = state[key]
            for dim, idx in dims.items():
                mask = torch.ones(t.shape[dim], dtype=torch.bool)
                mask[idx] = False
                t.index_fill_(dim, mask.nonzero().flatten().to(t.device), 0)
    return out
