"""``prune``: one call for unstructured or structured pruning, with a before/after table."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ...analysis import count_flops, count_params, latency, memory
from ...spec import NetworkSpec
from ._common import PruneError
from .unstructured import SparsityReport, prune_unstructured

__all__ = ["PruneResult", "cost_table", "finetuner", "prune"]


@dataclass
class PruneResult:
    """The pruned ``model``, its ``spec`` (``None`` for a module that has none), the
    before/after ``table`` and, for unstructured pruning, the ``sparsity``."""

    model: nn.Module
    spec: NetworkSpec | None
    table: dict[str, dict[str, float]] = field(default_factory=dict)
    sparsity: SparsityReport | None = None
    plan: Any = None


def _inputs(model: nn.Module, example_inputs: Any) -> tuple[Any, ...] | None:
    if example_inputs is not None:
        return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    spec = getattr(model, "spec", None)
    if isinstance(spec, NetworkSpec):
        from ...network import sample_inputs

        return sample_inputs(spec, batch=1)
    return None


def cost_table(
    before: nn.Module, after: nn.Module, inputs: tuple[Any, ...] | None, *, timed: bool = False
) -> dict[str, dict[str, float]]:
    """``{metric: {"before", "after", "ratio"}}`` for params, MACs, training memory and
    (``timed``) median CPU forward latency in ms."""
    rows: dict[str, tuple[float, float]] = {
        "params": (count_params(before).total, count_params(after).total)
    }
    if inputs is not None:
        with torch.no_grad():
            rows["macs"] = tuple(  # type: ignore[assignment]
                count_flops(m, inputs).forward.macs for m in (before, after)
            )
        rows["memory_bytes"] = tuple(  # type: ignore[assignment]
            memory(m, inputs).peak_training for m in (before, after)
        )
        if timed:
            rows["latency_ms"] = tuple(  # type: ignore[assignment]
                latency(m, inputs, backward=False).forward.median_ms for m in (before, after)
            )
    return {
        k: {"before": float(a), "after": float(b), "ratio": float(b) / a if a else 1.0}
        for k, (a, b) in rows.items()
    }


def finetuner(
    data: Iterable[Any],
    *,
    steps: int = 100,
    lr: float = 1e-3,
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
) -> Callable[[nn.Module], None]:
    """A ``finetune=`` hook for :func:`prune`: ``steps`` AdamW steps over ``(inputs, target)``
    batches of ``data`` (cycled), cross-entropy by default; leaves the model in eval mode."""
    from torch.nn.functional import cross_entropy

    batches = list(data)
    if not batches or steps < 1:
        raise PruneError("finetuner needs at least one batch and steps >= 1")
    loss_fn = loss_fn or cross_entropy

    def run(model: nn.Module) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for step in range(steps):
            x, y = batches[step % len(batches)]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        model.eval()

    return run


def prune(
    model: nn.Module,
    amount: float,
    *,
    structured: bool = True,
    criterion: str = "l1",
    scope: str = "global",
    example_inputs: Any = None,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
    round_to: int = 1,
    timed: bool = False,
    finetune: Callable[[nn.Module], Any] | None = None,
) -> PruneResult:
    """Prune ``amount`` (in ``[0, 1)``) of ``model``; the input is never modified.

    ``structured=True`` removes whole channels, heads and hidden units: a spec-built
    :class:`~netarchitect.network.Network` gives a new spec and a network built from it;
    any other module is traced with ``torch.fx`` (``example_inputs`` needed).
    ``structured=False`` zeroes the smallest weights (``scope`` ``"global"`` or ``"layer"``).
    ``criterion``: ``"l1"``, ``"l2"``, ``"bn_scale"`` or ``"taylor"`` (with ``data`` =
    ``(inputs, target)`` batches and ``loss_fn``, cross-entropy by default). ``finetune``
    is called on the pruned model before the table is made (a short recovery loop).
    ``round_to`` makes kept counts multiples of it where a group allows; ``timed`` adds a
    latency row to the table.
    """
    inputs = _inputs(model, example_inputs)
    spec = getattr(model, "spec", None)
    report = plan = None
    if not structured:
        new, report = prune_unstructured(model, amount, scope=scope)
    elif isinstance(spec, NetworkSpec):
        from .structured import apply_plan, plan_pruning

        plan = plan_pruning(
            model, amount, criterion=criterion, data=data, loss_fn=loss_fn, round_to=round_to
        )
        new = apply_plan(model, plan)
        spec = plan.spec
    else:
        from .fx_graph import prune_module

        new = prune_module(
            copy.deepcopy(model), amount, inputs, criterion=criterion, round_to=round_to
        )
        spec = None
    if finetune is not None:
        finetune(new)
    table = cost_table(model, new, inputs, timed=timed)
    return PruneResult(new, spec if isinstance(spec, NetworkSpec) else None, table, report, plan)
