"""``netarchitect inspect`` and ``netarchitect doctor``: analysis of a registered model or spec."""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from ._io import check_readable
from .errors import BudgetError, ShapeError, SpecError

__all__ = ["MAX_INPUT_BYTES", "register", "resolve_target"]


InputSpecs = list[tuple[tuple[int, ...], torch.dtype]]

MAX_INPUT_BYTES = 2**30
"""Largest total size of the input tensors of a run on real tensors (a quarter of the
available memory when that is less); larger inputs are refused before allocation."""


def _is_spec_file(target: str) -> bool:
    path = Path(target)
    return path.suffix in (".yaml", ".yml", ".json") or path.is_file()


def resolve_target(
    target: str, *, meta: bool, seed: int = 0
) -> tuple[nn.Module, InputSpecs | None]:
    """A model from a spec file or a registered model name, and its spec's inputs at batch 1
    (``None`` for a registered model that is not spec-built)."""
    path = Path(target)
    if _is_spec_file(target):
        from .network import build

        check_readable(path, "spec file", text=True)
        model = build(path, device="meta" if meta else None, seed=seed)
        return model, _spec_inputs(model)
    from .factory import create_model

    if meta:
        try:
            model = create_model(target, device="meta")
        except TypeError as exc:  # a builder without device=: build under a meta default device
            if "device" not in str(exc):
                raise
            with torch.device("meta"):
                model = create_model(target)
        return model, _spec_inputs(model)
    torch.manual_seed(seed)
    model = create_model(target)
    return model, _spec_inputs(model)


def _spec_inputs(model: nn.Module) -> InputSpecs | None:
    """A spec-built model's declared inputs at batch 1."""
    from ._probe import DTYPES

    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(spec, "inputs"):
        return None
    return [((1, *i.shape), DTYPES[i.dtype]) for i in spec.inputs]


def _check_count(model: nn.Module, target: str, count: int) -> None:
    """Refuse a number of inputs the model cannot take (before running it)."""
    spec = getattr(model, "spec", None)
    names = [i.name for i in getattr(spec, "inputs", ())]
    if names:
        if count != len(names):
            raise SpecError(
                f"{target} takes {len(names)} input(s) ({', '.join(names)}), got {count}",
                path="--input",
            )
        return
    try:
        inspect.signature(model.forward).bind(*range(count))
    except TypeError as exc:
        raise SpecError(f"{target} cannot take {count} input(s): {exc}", path="--input") from None
    except ValueError:  # pragma: no cover - a forward without a signature: let it run
        pass


def _check_size(parsed: InputSpecs, *, meta: bool | None, source: str = "--input") -> None:
    """Refuse, before allocating them, real input tensors larger than the limit.

    ``meta`` is None for a command without ``--meta`` (doctor); ``source`` is ``--input``
    or ``spec`` (the spec's own input shapes).
    """
    from .analysis._common import human_bytes
    from .network import available_memory

    if meta:
        return
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in parsed)
    limit = min(MAX_INPUT_BYTES, available_memory() // 4)
    if total > limit:
        what = (
            "--input: the input tensors" if source == "--input" else "the spec's inputs (batch 1)"
        )
        hint = (
            "analyse it on the meta device (--meta)"
            if meta is False
            else "use a smaller batch"
            if source == "--input"
            else "this command needs real tensors"
        )
        raise BudgetError(
            f"{what} take {human_bytes(total)}, more than the "
            f"{human_bytes(limit)} a run on real tensors may use; {hint}"
        )


def _parsed_input(args: argparse.Namespace) -> InputSpecs | None:
    """``--input`` parsed and size-checked (before any model is built), or None for a spec's
    own inputs."""
    from .analysis import parse_input_shape

    if args.input is None:
        return None
    try:
        parsed = parse_input_shape(args.input)
    except ValueError as exc:
        raise SpecError(str(exc), path="--input") from None
    _check_size(parsed, meta=getattr(args, "meta", None))
    return parsed


def _inputs(
    args: argparse.Namespace,
    model: nn.Module,
    parsed: InputSpecs | None,
    spec_inputs: InputSpecs | None,
) -> tuple[torch.Tensor, ...]:
    from .analysis import make_inputs

    meta = getattr(args, "meta", None)  # doctor has no --meta
    if parsed is None and callable(getattr(model, "sample_inputs", None)):
        # a model whose call needs more than its declared inputs (a GNN's graph) says how
        return tuple(model.sample_inputs(device="meta" if meta else "cpu"))
    if parsed is None:  # the spec's own inputs
        if spec_inputs is None:
            raise SpecError(
                f"required for {args.model}, which is not spec-built (e.g. --input 1x3x224x224)",
                path="--input",
            )
        parsed = spec_inputs
        _check_size(parsed, meta=meta, source="spec")
    _check_count(model, args.model, len(parsed))
    return make_inputs(parsed, device="meta" if meta else "cpu")


def _run_checked(fn, target: str, inputs: tuple[torch.Tensor, ...]):  # type: ignore[no-untyped-def]
    """Run an analysis; inputs the model rejects (``ValueError`` from a block's checks, a
    ``RuntimeError`` from torch) become one line naming the model and the input shapes."""
    try:
        return fn()
    except (ValueError, RuntimeError) as exc:
        shapes = ", ".join(
            "x".join(map(str, t.shape)) for t in inputs if isinstance(t, torch.Tensor)
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "can't allocate memory" in first or "not enough memory" in first:
            raise BudgetError(
                f"--input: {target} on input {shapes} ran out of memory ({first})"
            ) from None
        raise ShapeError(f"{target} cannot take input {shapes}: {first}", path="--input") from None


def _cmd_inspect(args: argparse.Namespace, out: Console) -> int:
    from .analysis import inspect_command

    parsed = _parsed_input(args)
    model, shapes = resolve_target(args.model, meta=args.meta)
    inputs = _inputs(args, model, parsed, shapes)
    _run_checked(
        lambda: inspect_command(
            model, inputs, backward=args.backward, as_json=args.json, console=out
        ),
        args.model,
        inputs,
    )
    return 0


def _cmd_doctor(args: argparse.Namespace, out: Console) -> int:
    from .analysis import doctor_command

    parsed = _parsed_input(args)
    model, shapes = resolve_target(args.model, meta=False)
    inputs = _inputs(args, model, parsed, shapes)
    _run_checked(
        lambda: doctor_command(model, inputs, plot_path=args.plot, console=out), args.model, inputs
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` and ``doctor`` sub-commands."""
    from .cli import writable_file

    p = sub.add_parser("inspect", help="parameters, MACs/FLOPs, memory and a per-module table")
    p.add_argument("model", help="registered model name or spec file")
    p.add_argument(
        "--input",
        help="input shape(s) with batch, e.g. 1x3x224x224 or 1x128:int64 "
        "(default: the model's spec inputs, batch 1)",
    )
    p.add_argument("--backward", action="store_true", help="also count the backward pass")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--meta", action="store_true", help="analyse on the meta device (no weights allocated)"
    )
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser("doctor", help="gradient-flow and stability diagnosis")
    p.add_argument("model", help="registered model name or spec file")
    p.add_argument(
        "--input", help="input shape(s) with batch (default: the spec's inputs, batch 1)"
    )
    p.add_argument("--plot", metavar="PNG", type=writable_file, help="write a gradient-flow plot")
    p.set_defaults(handler=_cmd_doctor)
