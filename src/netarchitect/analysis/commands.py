"""Text for the ``netarchitect inspect`` and ``netarchitect doctor`` commands.

The CLI resolves ``MODEL_NAME|SPEC`` to a module and turns ``--input`` strings into
tensors with :func:`parse_input_shape` and :func:`make_inputs`; the functions here
return the text to print.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from ._common import Inputs, human_bytes, human_count
from .doctor import diagnose
from .flops import count_flops
from .memory import memory
from .plots import plot_gradient_flow
from .summary import summary

__all__ = ["DTYPES", "doctor_command", "inspect_command", "make_inputs", "parse_input_shape"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "float16": torch.float16,
    "half": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "int64": torch.int64,
    "long": torch.int64,
    "int32": torch.int32,
    "int": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
"""Names accepted after ``:`` in an input spec."""

_DIMS = re.compile(r"^\d+(x\d+)*$")
_MAX_BYTES = 2**63 - 1  # torch sizes (elements and bytes) are int64


def _quote(text: str, limit: int = 40) -> str:
    """``repr(text)``, shortened to about ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def parse_input_shape(text: str) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """Parse ``"1x3x224x224"``, ``"2x16:int64"`` or several joined by ``,``.

    Returns ``[(shape, dtype), ...]`` (dtype defaults to float32).
    Raises ``ValueError`` naming the bad part (also for sizes beyond torch's int64 limits).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty input shape {text!r}; expected e.g. '1x3x224x224' or '2x16:int64'")
    parsed = []
    for part in text.split(","):
        where = f" in {_quote(text)}" if "," in text else ""
        bad = f"bad input shape {_quote(part.strip())}{where}"
        dims, _, dtype_name = part.strip().lower().partition(":")
        dims = dims.strip()
        if not _DIMS.match(dims):
            raise ValueError(
                f"{bad}: dimensions must be positive integers joined by 'x', "
                "e.g. '1x3x224x224' or '2x16:int64'"
            )
        # 20+ digits exceed int64 whatever they are (and int() refuses thousands of digits)
        shape = tuple(int(d) if len(d) < 20 else _MAX_BYTES for d in dims.split("x"))
        if any(d == 0 for d in shape):
            raise ValueError(f"{bad}: zero-sized dimension")
        dtype_key = dtype_name.strip() or "float32"
        if dtype_key not in DTYPES:
            raise ValueError(
                f"unknown dtype {_quote(dtype_name.strip())} in {_quote(part.strip())}; "
                f"expected one of {', '.join(sorted(DTYPES))}"
            )
        dtype = DTYPES[dtype_key]
        if math.prod(shape) * dtype.itemsize > _MAX_BYTES:
            raise ValueError(f"{bad}: too large (its size in bytes overflows torch's 64-bit sizes)")
        parsed.append((shape, dtype))
    return parsed


def make_inputs(
    specs: Sequence[tuple[Sequence[int], torch.dtype]],
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Tensors for parsed specs: floats ~ N(0, 1) (seeded), integers and bools zeros."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for shape, dtype in specs:
        if torch.device(device).type == "meta":
            tensors.append(torch.empty(tuple(shape), dtype=dtype, device="meta"))
        elif dtype.is_floating_point:
            tensors.append(torch.randn(tuple(shape), generator=generator).to(device, dtype))
        else:
            tensors.append(torch.zeros(tuple(shape), dtype=dtype, device=device))
    return tuple(tensors)


def inspect_command(
    model: nn.Module,
    inputs: Inputs,
    *,
    backward: bool = False,
    as_json: bool = False,
    console: Console | None = None,
) -> str:
    """Summary table, parameters, MACs/FLOPs (forward, + backward) and training memory."""
    table = summary(model, inputs)
    flops = count_flops(model, inputs, backward=backward) if backward else table.flops
    mem = memory(model, inputs)
    if as_json:
        payload = {
            "params": table.params.to_dict(),
            "flops": flops.to_dict(),
            "memory": mem.to_dict(),
            "summary": table.to_dict()["rows"],
        }
        text = json.dumps(payload, indent=2)
        if console is not None:
            console.print(text, highlight=False, markup=False)
        return text + "\n"
    lines = []
    if backward and flops.backward is not None:
        lines.append(
            f"Backward: {human_count(flops.backward.macs)} MACs, "
            f"{human_count(flops.backward.other_flops)} other FLOPs; "
            f"training step total {human_count(flops.total_flops)} FLOPs"
        )
    lines.append(
        "Memory (AdamW): "
        f"params {human_bytes(mem.params)}, grads {human_bytes(mem.grads)}, "
        f"optimizer {human_bytes(mem.optimizer_state)}, activations {human_bytes(mem.activations)}"
        f", peak training ~ {human_bytes(mem.peak_training)} ({mem.FORMULA})"
    )
    buffer = io.StringIO()
    buffer.write(table.render(console))
    for line in lines:
        buffer.write(line + "\n")
        if console is not None:
            console.print(line, highlight=False)
    return buffer.getvalue()


def doctor_command(
    model: nn.Module,
    inputs: Inputs,
    *,
    plot_path: str | Path | None = None,
    console: Console | None = None,
) -> str:
    """Run :func:`~netarchitect.analysis.doctor.diagnose` and return its report as text."""
    report = diagnose(model, inputs)
    text = report.render(console)
    if plot_path is not None:
        written = plot_gradient_flow(report, plot_path)
        line = f"Gradient-flow plot written to {written}"
        text += line + "\n"
        if console is not None:
            console.print(line, highlight=False)
    return text
