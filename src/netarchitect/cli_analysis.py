"""``netarchitect inspect`` and ``netarchitect doctor``: analysis of a registered model or a spec."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from .errors import ShapeError, SpecError

__all__ = ["register", "resolve_target"]


InputSpecs = list[tuple[tuple[int, ...], torch.dtype]]


def resolve_target(target: str, *, meta: bool, seed: int = 0) -> tuple[nn.Module, InputSpecs | None]:
    """A model from a spec file or a registered model name, and a spec's inputs at batch 1."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        from ._probe import DTYPES as _DTYPES
        from .network import build

        model = build(path, device="meta" if meta else None, seed=seed)
        return model, [((1, *i.shape), _DTYPES[i.dtype]) for i in model.spec.inputs]
    from .registry import create_model

    if meta:
        try:
            return create_model(target, device="meta"), None
        except TypeError as exc:  # a builder without device=: build under a meta default device
            if "device" not in str(exc):
                raise
        with torch.device("meta"):
            return create_model(target), None
    torch.manual_seed(seed)
    return create_model(target), None


def _inputs(args: argparse.Namespace, spec_inputs: InputSpecs | None) -> tuple[torch.Tensor, ...]:
    from .analysis import make_inputs, parse_input_shape

    if args.input:
        try:
            parsed = parse_input_shape(args.input)
        except ValueError as exc:
            raise SpecError(str(exc), path="--input") from None
    elif spec_inputs is not None:
        parsed = spec_inputs
    else:
        raise SpecError("required for a registered model (e.g. --input 1x3x224x224)", path="--input")
    return make_inputs(parsed, device="meta" if getattr(args, "meta", False) else "cpu")


def _run_checked(fn, target: str, inputs: tuple[torch.Tensor, ...]):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except ValueError as exc:  # the analysis tools reject unusable inputs with ValueError
        raise SpecError(str(exc).strip().splitlines()[0], path="--input") from None
    except RuntimeError as exc:
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapeError(f"{target} cannot take input {shapes}: {first}", path="--input") from None


def _cmd_inspect(args: argparse.Namespace, out: Console) -> int:
    from .analysis import inspect_command

    model, shapes = resolve_target(args.model, meta=args.meta)
    inputs = _inputs(args, shapes)
    _run_checked(lambda: inspect_command(model, inputs, backward=args.backward, as_json=args.json, console=out),
                 args.model, inputs)
    return 0


def _cmd_doctor(args: argparse.Namespace, out: Console) -> int:
    from .analysis import doctor_command

    model, shapes = resolve_target(args.model, meta=False)
    inputs = _inputs(args, shapes)
    _run_checked(lambda: doctor_command(model, inputs, plot_path=args.plot, console=out), args.model, inputs)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` and ``doctor`` sub-commands."""
    p = sub.add_parser("inspect", help="parameters, MACs/FLOPs, memory and a per-module table")
    p.add_argument("model", help="registered model name or spec file")
    p.add_argument("--input", help="input shape(s) with batch, e.g. 1x3x224x224 or 1x128:int64 (default: the spec's inputs, batch 1)")
    p.add_argument("--backward", action="store_true", help="also count the backward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--meta", action="store_true", help="analyse on the meta device (no weights allocated)")
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser("doctor", help="gradient-flow and stability diagnosis")
    p.add_argument("model", help="registered model name or spec file")
    p.add_argument("--input", help="input shape(s) with batch (default: the spec's inputs, batch 1)")
    p.add_argument("--plot", metavar="PNG", help="write a gradient-flow plot")
    p.set_defaults(handler=_cmd_doctor)
