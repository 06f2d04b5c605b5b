"""Checks of the forward pass: shapes, values, batch independence, determinism, modes, repr."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._context import CheckContext, seeded
from ._outputs import compare_outputs, named_tensors
from ._registry import CheckFailure, SkipCheck, register_check

__all__: list[str] = []


def _shapes(outputs: list[tuple[str, Tensor]]) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(t.shape)) for name, t in outputs]


@register_check("output_shape")
def output_shape(ctx: CheckContext) -> None:
    """The forward returns tensors; the first keeps the batch dim of the first input (when that
    input has one); a second call gives the same shapes."""
    module = ctx.build().eval()
    raw = ctx.call(module)
    first = named_tensors(raw)
    if not first:
        raise CheckFailure(f"forward returned no tensors (got {type(raw).__name__})")
    batch = next((x.shape[0] for x in ctx.inputs if isinstance(x, Tensor) and x.ndim), None)
    name, primary = first[0]
    if batch is not None and (primary.ndim == 0 or primary.shape[0] != batch):
        raise CheckFailure(
            f"{name} has shape {tuple(primary.shape)}: expected batch dim {batch} "
            "(dim 0 of the first input)"
        )
    again = _shapes(ctx.forward(module))
    if again != _shapes(first):
        raise CheckFailure(f"output shapes changed between calls: {_shapes(first)} -> {again}")


@register_check("finite")
def finite(ctx: CheckContext) -> None:
    """Every floating output is free of NaN and inf."""
    for name, t in ctx.reference():
        if (t.is_floating_point() or t.is_complex()) and not bool(t.isfinite().all()):
            nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
            raise CheckFailure(f"{name} has {nan} NaN and {inf} inf of {t.numel()} values")


def _common_batch(inputs: tuple[object, ...]) -> int:
    sizes = [x.shape[0] if x.ndim else None for x in inputs if isinstance(x, Tensor)]
    if not sizes or None in sizes or len(set(sizes)) != 1:
        raise SkipCheck(f"tensor inputs do not share a batch dimension (dim 0 sizes: {sizes})")
    if sizes[0] < 2:
        raise SkipCheck("batch size 1: nothing to compare")
    return int(sizes[0])  # type: ignore[arg-type]


@register_check("batch_independence")
def batch_independence(ctx: CheckContext) -> None:
    """In eval mode, row ``i`` of the batched output equals the output for sample ``i`` alone."""
    batch = _common_batch(ctx.inputs)
    module = ctx.build().eval()
    full = ctx.forward(module)
    compared = False
    for i in range(min(batch, 3)):
        alone = ctx.forward(module, ctx.map_inputs(lambda x, i=i: x[i : i + 1].clone()))
        if len(alone) != len(full):
            raise CheckFailure(
                f"sample {i} alone gives {len(alone)} outputs, the batch {len(full)}"
            )
        for (name, f), (_, a) in zip(full, alone):
            if f.ndim == 0 or f.shape[0] != batch or a.ndim == 0 or a.shape[0] != 1:
                continue
            compared = True
            reason = compare_outputs(
                [(name, f[i : i + 1])], [(name, a)], atol=ctx.atol, rtol=ctx.rtol
            )
            if reason:
                raise CheckFailure(
                    f"row {i} differs when sample {i} runs alone ({reason}): "
                    "the module mixes samples across the batch in eval mode"
                )
    if not compared:
        raise SkipCheck("no output has the batch dimension")


@register_check("determinism")
def determinism(ctx: CheckContext) -> None:
    """In eval mode two identical calls (RNG not reseeded) give identical outputs."""
    module = ctx.build().eval()
    with seeded(None):  # the second call sees the RNG state the first one left
        first, second = ctx.forward(module, seed=None), ctx.forward(module, seed=None)
    reason = compare_outputs(first, second, atol=0, rtol=0)
    if reason:
        raise CheckFailure(f"outputs differ between two identical calls in eval mode: {reason}")


@register_check("repr")
def repr_(ctx: CheckContext) -> None:
    """``repr(module)`` is a non-empty string."""
    text = repr(ctx.build())
    if not isinstance(text, str) or not text.strip():
        raise CheckFailure(f"repr(module) is {text!r}")


def _modules_in_mode(module: nn.Module, training: bool) -> list[str]:
    return [name or "<root>" for name, m in module.named_modules() if m.training == training]


def _tensor_state(module: nn.Module) -> dict[str, Tensor]:
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    return {k: v.detach().clone() for k, v in state.items()}


def _same(a: Tensor, b: Tensor) -> bool:
    if torch.equal(a, b):
        return True
    return a.shape == b.shape and a.is_floating_point() and bool(a.isclose(b, 0, 0, True).all())


@register_check("train_eval")
def train_eval(ctx: CheckContext) -> None:
    """``eval()``/``train()`` reach every submodule; ``eval()`` leaves parameters and buffers
    alone; eval outputs do not depend on the RNG (dropout-like layers are off)."""
    module = ctx.build()
    for mode, method, other in ((False, "eval", "training"), (True, "train", "eval")):
        module.train(mode)
        wrong = _modules_in_mode(module, not mode)
        if wrong:
            raise CheckFailure(f"{method}() left {', '.join(wrong)} in {other} mode")
    ctx.call(module)  # a train-mode forward runs (and may update running statistics)
    before = _tensor_state(module)
    module.eval()
    after = _tensor_state(module)
    changed = [k for k, v in before.items() if not _same(v, after[k])]
    if changed:
        raise CheckFailure(f"eval() changed {', '.join(changed)}")
    reason = compare_outputs(
        ctx.forward(module, seed=0), ctx.forward(module, seed=1), atol=0, rtol=0
    )
    if reason:
        raise CheckFailure(f"eval outputs differ between calls with different RNG seeds: {reason}")
