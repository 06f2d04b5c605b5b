"""Export: :func:`torch.export` programs and ONNX models, each checked against the model.

:func:`export_program` traces ``model(*inputs)`` with :func:`torch.export.export`,
runs the program on the same inputs and compares every output tensor with the eager
model's (``assert_close`` at ``atol``/``rtol``). :func:`export_onnx` converts that
program with the dynamo ONNX exporter and checks it with onnxruntime the same way.
Files are written atomically (a temporary name, renamed when complete).

A model whose Python control flow depends on tensor *values* cannot be traced: that is a
:class:`~netarchitect.errors.NetArchitectError` naming the model, the reason and the
source line. Dataclass outputs (``BertOutput``, ...) are registered as pytree nodes the
first time they are exported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import (
    ConstraintViolationError,
    GuardOnDataDependentSymNode,
)
from torch.utils import _pytree as pytree

from .._io import atomic_write
from ..errors import NetArchitectError

__all__ = ["export_onnx", "export_program"]


def _refuse_data_dependent(model: nn.Module, name: str) -> None:
    """Modules that declare data-dependent control flow (adaptive ODE solvers) cannot be
    one program: say which and why before tracing."""
    from .compile import data_dependent_modules

    declared = data_dependent_modules(model)
    if declared:
        path, reason = next(iter(declared.items()))
        raise NetArchitectError(f"cannot export {name}: {path or 'the model'!r}: {reason}")


def _refuse_legacy_int8(model: nn.Module, name: str) -> None:
    """torch.export cannot trace the legacy int8 modules (packed C++ parameters)."""
    from torch.ao.nn.quantized import dynamic as nnqd

    legacy = [n for n, m in model.named_modules() if isinstance(m, nnqd.Linear)]
    if legacy:
        raise NetArchitectError(
            f"cannot export {name}: {legacy[0]!r} is a legacy int8 Linear (packed parameters "
            "torch.export cannot trace); quantize with backend='torchao' to export"
        )


def _name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return f"{getattr(spec, 'name', None) or type(model).__name__}"


def _register_dataclasses(output: Any) -> None:
    """Make every dataclass in ``output`` a pytree node, so export can return it."""
    stack = [output]
    while stack:
        value = stack.pop()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            cls = type(value)
            if cls not in pytree.SUPPORTED_NODES:
                torch.export.register_dataclass(
                    cls, serialized_type_name=f"{cls.__module__}.{cls.__qualname__}"
                )
            stack += [getattr(value, f.name) for f in dataclasses.fields(value)]
        elif isinstance(value, list | tuple):
            stack += list(value)
        elif isinstance(value, dict):
            stack += list(value.values())


def _tensors(output: Any) -> list[Tensor]:
    return [t for t in pytree.tree_leaves(output) if isinstance(t, Tensor)]


def _check_parity(name: str, what: str, ours: Sequence[Tensor], reference: Sequence[Tensor],
                  atol: float, rtol: float, hint: str = "") -> None:
    if len(ours) != len(reference):
        raise NetArchitectError(
            f"{what} of {name} returns {len(ours)} tensor(s), the model {len(reference)}"
        )
    for i, (got, want) in enumerate(zip(ours, reference, strict=True)):
        try:
            torch.testing.assert_close(got, want, atol=atol, rtol=rtol)
        except AssertionError as exc:
            detail = str(exc).strip().splitlines()[0]
            raise NetArchitectError(
                f"{what} of {name} differs from the model in output {i}: {detail}{hint}"
            ) from None


def _source_line(message: str) -> str:
    match = re.search(r"The following call raised this error:\s*\n\s*(File [^\n]+)", message)
    return f" ({match.group(1).strip()})" if match else ""


def _traced(name: str, trace: Callable[[], Any]) -> Any:
    """``trace()``, with the errors a user can fix turned into NetArchitectErrors."""
    try:
        return trace()
    except GuardOnDataDependentSymNode as exc:
        first = str(exc).strip().splitlines()[0]
        raise NetArchitectError(
            f"cannot export {name}: its Python control flow depends on tensor values "
            f"({first}){_source_line(str(exc))}; use torch.cond / torch.where instead of "
            "`if tensor:`"
        ) from None
    except (ConstraintViolationError, torch._dynamo.exc.UserError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise NetArchitectError(f"cannot export {name}: {first}") from None


def _save(path: str | Path, write: Callable[[Path], None]) -> Path:
    return atomic_write(path, write)


@torch.no_grad()
def export_program(
    model: nn.Module,
    *inputs: Any,
    path: str | Path | None = None,
    dynamic_shapes: Any = None,
    kwargs: dict[str, Any] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> torch.export.ExportedProgram:
    """``torch.export.export(model, inputs)``, checked to give the model's outputs on
    ``inputs`` (and ``kwargs``), and saved to ``path`` (``.pt2``) when given.

    The model is traced in its current mode (call ``.eval()`` first for inference);
    ``dynamic_shapes`` is passed to :func:`torch.export.export`. Data-dependent control
    flow, violated dynamic-shape constraints and a program whose outputs differ are each a
    :class:`~netarchitect.errors.NetArchitectError` naming the model.
    """
    name = _name(model)
    _refuse_legacy_int8(model, name)
    _refuse_data_dependent(model, name)
    kwargs = dict(kwargs or {})
    reference = model(*inputs, **kwargs)
    _register_dataclasses(reference)
    program = _traced(
        name,
        lambda: torch.export.export(
            model, tuple(inputs), kwargs or None, dynamic_shapes=dynamic_shapes
        ),
    )
    ours = program.module()(*inputs, **kwargs)
    hint = "; the model is in training mode: call .eval() first" if model.training else ""
    _check_parity(name, "the exported program", _tensors(ours), _tensors(reference), atol, rtol,
                  hint)
    if path is not None:
        _save(path, lambda tmp: torch.export.save(program, tmp))
    return program


def _onnx_outputs(path: Path, inputs: Sequence[Any]) -> list[Tensor]:
    import onnxruntime as ort  # type: ignore[import-untyped]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = [t.detach().cpu().numpy() for t in _tensors(list(inputs))]
    feed = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=False)}
    return [torch.from_numpy(a) for a in session.run(None, feed)]


@torch.no_grad()
def export_onnx(
    model: nn.Module,
    *inputs: Any,
    path: str | Path,
    opset: int | None = None,
    dynamic_shapes: Any = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (the dynamo exporter, via :func:`export_program`)
    and, with ``check``, compare onnxruntime's outputs on ``inputs`` with the model's.

    ``opset`` defaults to the exporter's. Needs the ``onnx`` extra (onnx, onnxscript,
    onnxruntime); without it, a :class:`~netarchitect.errors.NetArchitectError` says so.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401

        if check:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise NetArchitectError(
            f"ONNX export needs the 'onnx' extra (pip install 'netarchitect[onnx]'): {exc}"
        ) from None
    name = _name(model)
    program = export_program(model, *inputs, dynamic_shapes=dynamic_shapes)
    try:
        onnx_program = _traced(
            name,
            lambda: torch.onnx.export(program, opset_version=opset, dynamo=True, verbose=False),
        )
    except torch.onnx.OnnxExporterError as exc:  # an operator ONNX has no translation for
        op = re.search(r"target=([\w.]+)", str(exc))
        raise NetArchitectError(
            f"cannot export {name} to ONNX: the exporter cannot translate "
            f"{op.group(1) if op else 'one of its operators'} (e.g. int8 matmuls); "
            "export the float model, or use torch.export (export_program)"
        ) from None

    def write(tmp: Path) -> None:
        onnx_program.save(str(tmp))
        if check:
            reference = _tensors(model(*inputs))
            _check_parity(name, "the ONNX model", _onnx_outputs(tmp, inputs), reference,
                          atol, rtol)

    return _save(path, write)
