"""Checks across dtypes and devices: float64, meta, bfloat16 autocast, torch.compile."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ._context import CheckContext
from ._outputs import compare_outputs
from ._registry import CheckFailure, register_check

__all__: list[str] = []

LOOSE = {"atol": 1e-4, "rtol": 1e-3}  # float32 vs float64, eager vs compiled
BF16 = {"atol": 0.1, "rtol": 0.1}  # bfloat16 keeps ~3 significant digits


def _float_inputs(ctx: CheckContext, dtype: torch.dtype) -> tuple[object, ...]:
    return ctx.map_inputs(lambda x: x.to(dtype) if x.is_floating_point() else x.clone())


@register_check("float64")
def float64(ctx: CheckContext) -> None:
    """``module.double()`` on float64 inputs runs, returns float64 and matches float32."""
    module = ctx.build().double().eval()
    got = ctx.forward(module, _float_inputs(ctx, torch.float64))
    ref = ctx.reference()
    for (name, r), (_, g) in zip(ref, got):
        if r.is_floating_point() and g.dtype != torch.float64:
            raise CheckFailure(f"{name} is {g.dtype} after module.double(), expected torch.float64")
    reason = compare_outputs(ref, got, scaled=True, **LOOSE)
    if reason:
        raise CheckFailure(f"float64 outputs differ from float32 outputs: {reason}")


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


@register_check("meta")
def meta(ctx: CheckContext) -> None:
    """``factory(device="meta")`` puts every tensor on meta with the same names and shapes,
    ``factory(dtype=torch.float64)`` makes float64 parameters, and the forward on meta inputs
    gives the same output shapes."""
    ctx.require_factory()
    real = ctx.build()
    on_meta = ctx.build(device="meta")
    off = [n for n, t in _tensors(on_meta).items() if t.device.type != "meta"]
    if off:
        raise CheckFailure(
            f"factory(device='meta') left {', '.join(off)} off the meta device: "
            "pass device= to every parameter and buffer"
        )
    shapes = {n: tuple(p.shape) for n, p in on_meta.named_parameters()}
    expected = {n: tuple(p.shape) for n, p in real.named_parameters()}
    if shapes != expected:
        raise CheckFailure(f"parameters on meta {shapes} differ from the real ones {expected}")
    wide = ctx.build(device="meta", dtype=torch.float64).named_parameters()
    narrow = [n for n, p in wide if p.is_floating_point() and p.dtype != torch.float64]
    if narrow:
        raise CheckFailure(
            f"factory(dtype=torch.float64) left {', '.join(narrow)} in another dtype: "
            "pass dtype= to every parameter"
        )
    try:
        got = ctx.forward(on_meta.eval(), ctx.map_inputs(lambda x: x.to("meta")))
    except Exception as err:
        raise CheckFailure(
            f"forward on the meta device raised {type(err).__name__}: {err}"
        ) from err
    got_shapes = [(n, tuple(t.shape)) for n, t in got]
    ref_shapes = [(n, tuple(t.shape)) for n, t in ctx.reference()]
    if got_shapes != ref_shapes:
        raise CheckFailure(f"output shapes on meta {got_shapes} differ from {ref_shapes}")


@register_check("bf16_autocast")
def bf16_autocast(ctx: CheckContext) -> None:
    """Under ``torch.autocast(dtype=torch.bfloat16)`` floating outputs stay within 10% of the
    output scale of float32."""
    module = ctx.build().eval()
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
        got = ctx.forward(module)
    reason = compare_outputs(ctx.reference(), got, scaled=True, floating_only=True, **BF16)
    if reason:
        raise CheckFailure(f"bfloat16 autocast outputs differ from float32: {reason}")


@register_check("compile", opt_in=True)
def compile_(ctx: CheckContext) -> None:
    """``torch.compile(module)`` gives the eager outputs (slow: opt-in)."""
    module = ctx.build().eval()
    try:
        with warnings.catch_warnings():  # torch-internal deprecation notices while tracing
            warnings.simplefilter("ignore", DeprecationWarning)
            got = ctx.forward(torch.compile(module))
    finally:
        torch._dynamo.reset()
    reason = compare_outputs(ctx.reference(), got, scaled=True, **LOOSE)
    if reason:
        raise CheckFailure(f"compiled outputs differ from eager: {reason}")
