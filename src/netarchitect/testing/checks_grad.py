"""Checks of the backward pass: gradient flow, activation checkpointing, gradcheck."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from ._context import CheckContext
from ._outputs import compare_outputs, named_tensors, projection_loss
from ._registry import CheckFailure, SkipCheck, register_check

__all__: list[str] = []


def _backward(ctx: CheckContext, module: nn.Module) -> list[tuple[str, Tensor]]:
    """Train-mode forward (seeded) + backward of the projection loss; returns the outputs."""
    outputs = ctx.forward(module.train(), grad=True)
    floats = [t for _, t in outputs if t.is_floating_point()]
    if not floats:
        raise SkipCheck("no floating-point output to differentiate")
    live = [t for t in floats if t.requires_grad]
    if not live:
        raise CheckFailure("floating outputs do not require grad: no output depends on a parameter")
    projection_loss(live).backward()
    return outputs


def _trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        raise SkipCheck("no trainable parameters")
    return params


@register_check("gradients")
def gradients(ctx: CheckContext) -> None:
    """A random projection of the outputs gives every trainable parameter a finite,
    not all-zero gradient."""
    module = ctx.build()
    params = _trainable(module)
    _backward(ctx, module)
    problems = {
        "no gradient (unused in forward?)": [n for n, p in params if p.grad is None],
        "all-zero gradient": [n for n, p in params if p.grad is not None and not p.grad.any()],
        "non-finite gradient": [
            n for n, p in params if p.grad is not None and not bool(p.grad.isfinite().all())
        ],
    }
    found = [f"{kind}: {', '.join(names)}" for kind, names in problems.items() if names]
    if found:
        raise CheckFailure("; ".join(found))


@register_check("grad_checkpointing")
def grad_checkpointing(ctx: CheckContext) -> None:
    """With ``set_grad_checkpointing(True)`` outputs and gradients equal those without it."""
    plain = ctx.build()
    if not callable(getattr(plain, "set_grad_checkpointing", None)):
        raise SkipCheck("module has no set_grad_checkpointing()")
    checkpointed = ctx.build()
    checkpointed.set_grad_checkpointing(True)
    ref, got = _backward(ctx, plain), _backward(ctx, checkpointed)
    reason = compare_outputs(ref, got, atol=ctx.atol, rtol=ctx.rtol)
    if reason:
        raise CheckFailure(f"outputs differ with checkpointing on: {reason}")
    grads = dict(checkpointed.named_parameters())
    for name, p in plain.named_parameters():
        g = grads[name].grad
        if (p.grad is None) != (g is None):
            raise CheckFailure(f"gradient of {name!r} is None only with checkpointing on or off")
        if p.grad is not None:
            reason = compare_outputs([(name, p.grad)], [(name, g)], atol=ctx.atol, rtol=ctx.rtol)
            if reason:
                raise CheckFailure(f"gradient of {name!r} differs with checkpointing on: {reason}")


@register_check("gradcheck", opt_in=True)
def gradcheck(ctx: CheckContext) -> None:
    """``torch.autograd.gradcheck`` (float64, fast mode) with respect to the floating inputs
    and the trainable parameters, in eval mode."""
    module = ctx.build().double().eval()
    params = {
        n: p.detach().requires_grad_() for n, p in module.named_parameters() if p.requires_grad
    }
    buffers = dict(module.named_buffers())
    slots = [i for i, x in enumerate(ctx.inputs) if isinstance(x, Tensor) and x.is_floating_point()]
    leaves = tuple(params.values()) + tuple(
        ctx.inputs[i].detach().double().requires_grad_() for i in slots
    )
    if not leaves:
        raise SkipCheck("no floating-point inputs or trainable parameters")

    def fn(*values: Tensor) -> tuple[Tensor, ...]:
        inputs = list(ctx.inputs)
        for i, value in zip(slots, values[len(params) :]):
            inputs[i] = value
        state = {**buffers, **dict(zip(params, values))}
        out = named_tensors(functional_call(module, state, tuple(inputs), ctx.forward_kwargs))
        return tuple(t for _, t in out if t.is_floating_point())

    try:
        torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    except GradcheckError as err:
        raise CheckFailure(str(err).strip().splitlines()[0]) from None
