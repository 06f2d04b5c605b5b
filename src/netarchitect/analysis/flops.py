"""Exact MAC/FLOP counting at the ATen dispatcher level, per module and per operator.

``count_flops`` runs the model once under a ``TorchDispatchMode`` so every operator is
seen — functional calls, fused attention kernels, ops inside custom modules — and a
:class:`~netarchitect.analysis._tracking.ModuleTracker` attributes each op to the module
paths running it (hierarchically: a parent's figure includes its children's). Formulas
and the costing rules live in :mod:`netarchitect.analysis.flop_formulas`.

Backward rule: the backward pass is what autograd actually runs, seeded with gradient
ones at every output that requires grad. A matrix product whose input requires grad
costs two products backward (input and weight gradients) — exactly ``2 x`` its forward
MACs; the first layer of a network, whose input does not require grad, only computes
its weight gradient (``1 x``).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._common import EagerDispatchMode, Inputs, call_model, tensors_in
from ._meta_kernels import cpu_kernels_on_meta
from ._tracking import ModuleTracker
from .flop_formulas import classify

__all__ = ["Count", "FlopCounter", "FlopResult", "count_flops"]


@dataclass
class Count:
    """MACs and other FLOPs of something (a module, an operator, a pass).

    ``flops`` is ``2 * macs`` (multiply-adds only); ``total_flops`` adds ``other_flops``.
    ``calls`` (operator calls) depends on the kernel that ran and is not compared by ``==``.
    """

    macs: int = 0
    other_flops: int = 0
    calls: int = field(default=0, compare=False)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def total_flops(self) -> int:
        return 2 * self.macs + self.other_flops

    def add(self, macs: int, other: int, calls: int = 1) -> None:
        self.macs += macs
        self.other_flops += other
        self.calls += calls

    def __add__(self, other: Count) -> Count:
        return Count(
            self.macs + other.macs,
            self.other_flops + other.other_flops,
            self.calls + other.calls,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "other_flops": self.other_flops,
            "total_flops": self.total_flops,
            "calls": self.calls,
        }


@dataclass
class FlopResult:
    """Result of :func:`count_flops`.

    ``forward``/``backward`` hold each pass (``backward`` is ``None`` unless requested);
    ``macs``, ``flops``, ``other_flops`` and ``total_flops`` are their sum.
    ``by_module`` maps a module path (``""`` is the root) to its hierarchical forward
    count; ``by_module_backward`` the same for backward. ``by_operator[_backward]``
    maps ``aten.mm``-style names to counts (lookups appear with 0 FLOPs).
    ``uncounted`` maps every operator that does work we have no formula for to its
    number of calls (zero-cost bookkeeping, such as views, is never listed).
    """

    forward: Count
    backward: Count | None = None
    by_module: dict[str, Count] = field(default_factory=dict)
    by_module_backward: dict[str, Count] = field(default_factory=dict)
    by_operator: dict[str, Count] = field(default_factory=dict)
    by_operator_backward: dict[str, Count] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def _total(self) -> Count:
        return self.forward + self.backward if self.backward is not None else self.forward

    @property
    def macs(self) -> int:
        return self._total.macs

    @property
    def flops(self) -> int:
        return self._total.flops

    @property
    def other_flops(self) -> int:
        return self._total.other_flops

    @property
    def total_flops(self) -> int:
        return self._total.total_flops

    def to_dict(self) -> dict[str, Any]:
        def table(d: dict[str, Count]) -> dict[str, dict[str, int]]:
            return {k: v.to_dict() for k, v in d.items()}

        return {
            "macs": self.macs,
            "flops": self.flops,
            "other_flops": self.other_flops,
            "total_flops": self.total_flops,
            "forward": self.forward.to_dict(),
            "backward": self.backward.to_dict() if self.backward is not None else None,
            "by_module": table(self.by_module),
            "by_module_backward": table(self.by_module_backward),
            "by_operator": table(self.by_operator),
            "by_operator_backward": table(self.by_operator_backward),
            "uncounted": dict(self.uncounted),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


class _Tally:
    """Counts of one pass (forward or backward)."""

    def __init__(self) -> None:
        self.total = Count()
        self.by_module: dict[str, Count] = {}
        self.by_operator: dict[str, Count] = {}

    def record(self, op: str, paths: Iterable[str], macs: int, other: int) -> None:
        self.total.add(macs, other)
        self.by_operator.setdefault(op, Count()).add(macs, other)
        for path in paths:
            self.by_module.setdefault(path, Count()).add(macs, other)


class FlopCounter(EagerDispatchMode):
    """Dispatch mode recording the cost of every ATen op (use through :func:`count_flops`).

    ``phase`` selects the tally ("forward" or "backward"); ops are attributed to the paths
    that ``tracker`` reports. Operators without a formula are first decomposed when
    PyTorch has a decomposition, else listed in ``uncounted``.
    """

    def __init__(self, tracker: ModuleTracker | None = None) -> None:
        super().__init__()
        self.tracker = tracker
        self.tallies = {"forward": _Tally(), "backward": _Tally()}
        self.phase = "forward"
        self.uncounted: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        info = classify(func)
        if info.kind == "unknown":
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if info.kind == "zero":
            if info.track is not None:
                info.track(args, kwargs, out)
            return out
        if info.kind == "unknown":
            self.uncounted[info.display] += 1
            return out
        _, (macs, other) = info.cost(args, kwargs, out)
        paths = self.tracker.paths() if self.tracker is not None else ()
        self.tallies[self.phase].record(info.display, paths, macs, other)
        return out


def _outputs_for_backward(output: Any) -> list[torch.Tensor]:
    return [t for t in tensors_in(output) if t.requires_grad and t.is_floating_point()]


def count_flops(model: nn.Module, inputs: Inputs, *, backward: bool = False) -> FlopResult:
    """Count MACs/FLOPs of ``model(inputs)`` (and its backward pass when ``backward``).

    ``inputs`` is a tensor, a tuple/list of positional inputs or a dict of keyword
    inputs; put them (and the model) on the ``meta`` device to analyse a model larger
    than memory — attention and recurrent layers then run the kernels CPU would pick, so
    results are identical to real CPU tensors. Works under ``no_grad`` and
    ``inference_mode`` for the forward pass; PyTorch's eval fast paths there may run on
    nested tensors (``nn.TransformerEncoder`` with ``src_key_padding_mask``), which are
    counted at their padded shape: exactly what the dense path computes on the same
    padded input and mask. The backward pass starts from gradient ones at every
    floating-point output that requires grad (no loss function is counted).
    """
    if backward and torch.is_inference_mode_enabled():
        raise ValueError("count_flops(backward=True) cannot run inside torch.inference_mode()")
    tracker = ModuleTracker(model)
    counter = FlopCounter(tracker)
    grad_context = torch.enable_grad() if backward else contextlib.nullcontext()
    with tracker, cpu_kernels_on_meta(inputs, model), counter, grad_context:
        output = call_model(model, inputs)
    if backward:
        roots = _outputs_for_backward(output)
        if not roots:
            raise ValueError(
                "count_flops(backward=True): no output requires grad "
                "(are all parameters frozen and the inputs without requires_grad?)"
            )
        grads = [torch.ones_like(t) for t in roots]
        leaves = list(model.parameters()) + [t for t in tensors_in(inputs) if t.is_leaf]
        saved = [t.grad for t in leaves]  # leave the user's .grad untouched
        counter.phase = "backward"
        try:
            with tracker, counter:
                torch.autograd.backward(roots, grads)
        finally:
            for t, g in zip(leaves, saved):
                t.grad = g
        del roots, grads
    fwd, bwd = counter.tallies["forward"], counter.tallies["backward"]
    return FlopResult(
        forward=fwd.total,
        backward=bwd.total if backward else None,
        by_module=fwd.by_module,
        by_module_backward=bwd.by_module,
        by_operator=fwd.by_operator,
        by_operator_backward=bwd.by_operator,
        uncounted=dict(counter.uncounted),
    )
