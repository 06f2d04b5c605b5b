"""Per-module summary table: path, type, output shape, parameters, MACs, activation bytes."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from ._common import Inputs, human_bytes, human_count, tensors_in
from .flops import Count, FlopResult, count_flops
from .memory import trace_activations
from .params import ParamCount, count_params

__all__ = ["SummaryRow", "SummaryTable", "summary"]

_COLUMNS = ("Module", "Type", "Output shape", "Params", "MACs", "Activations")


@dataclass
class SummaryRow:
    """One module: MACs are forward and include children; activations are bytes saved
    for backward while the module ran (children included, each storage once)."""

    path: str
    type: str
    depth: int
    output_shape: str
    params: int
    macs: int
    activation_bytes: int

    def cells(self) -> list[str]:
        name = "  " * max(self.depth - 1, 0) + (self.path.rsplit(".", 1)[-1] or self.path)
        return [
            name,
            self.type,
            self.output_shape,
            f"{self.params:,}",
            f"{self.macs:,}",
            human_bytes(self.activation_bytes),
        ]


@dataclass
class SummaryTable:
    """Rows (registration order, up to ``depth``) plus a ``total`` row for the whole model."""

    rows: list[SummaryRow]
    total: SummaryRow
    flops: FlopResult
    params: ParamCount
    notes: list[str] = field(default_factory=list)

    def render(self, console: Console | None = None) -> str:
        """Render with rich; prints to ``console`` when given and returns the text."""
        table = Table(title=f"{self.total.type} summary", show_footer=True)
        footer = self.total.cells()
        footer[0] = "Total"
        for column, foot in zip(_COLUMNS, footer):
            numeric = column in ("Params", "MACs", "Activations")
            table.add_column(column, footer=foot, justify="right" if numeric else "left")
        for row in self.rows:
            table.add_row(*row.cells())
        buffer = Console(file=io.StringIO(), width=console.width if console else 120, record=True)
        buffer.print(table)
        for note in self.notes:
            buffer.print(note, highlight=False)
        text = buffer.export_text()
        if console is not None:
            console.print(table)
            for note in self.notes:
                console.print(note, highlight=False)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(r) for r in self.rows],
            "total": asdict(self.total),
            "flops": self.flops.to_dict(),
            "params": self.params.to_dict(),
            "notes": list(self.notes),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_markdown(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rows = [line(list(_COLUMNS)), line(["---"] * len(_COLUMNS))]
        for row in self.rows:
            cells = row.cells()
            cells[0] = f"`{row.path}`"
            rows.append(line(cells))
        total = self.total.cells()
        total[0] = "**Total**"
        rows.append(line(total))
        return "\n".join(rows + [""] + self.notes) + "\n"


def _shape_text(output: Any) -> str:
    shapes = [list(t.shape) for t in tensors_in(output)]
    if not shapes:
        return "-"
    return ", ".join(str(s) for s in shapes)


def summary(model: nn.Module, inputs: Inputs, *, depth: int = 3) -> SummaryTable:
    """Summarise ``model`` on ``inputs`` (works on the meta device).

    Two forward passes run: one counting MACs, one recording output shapes and the
    tensors saved for backward. Modules deeper than ``depth`` are folded into parents.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    flops = count_flops(model, inputs)
    params = count_params(model)
    shapes: dict[str, str] = {}

    def on_post(path: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        shapes.setdefault(path, _shape_text(output))

    trace = trace_activations(model, inputs, post=on_post)
    activations = trace.module_bytes()
    rows = []
    for path, module in model.named_modules():
        level = path.count(".") + 1
        if not path or level > depth:
            continue
        rows.append(
            SummaryRow(
                path=path,
                type=type(module).__name__,
                depth=level,
                output_shape=shapes.get(path, "-"),
                params=params.by_module.get(path, 0),
                macs=flops.by_module.get(path, Count()).macs,
                activation_bytes=activations.get(path, 0),
            )
        )
    total = SummaryRow(
        path="",
        type=type(model).__name__,
        depth=0,
        output_shape=shapes.get("", "-"),
        params=params.total,
        macs=flops.forward.macs,
        activation_bytes=trace.total,
    )
    notes = [
        (
            f"Params: {params.total:,} ({params.trainable:,} trainable, {params.frozen:,} frozen); "
            f"buffers: {params.buffers:,}"
        ),
        (
            f"Forward: {human_count(flops.forward.macs)} MACs = {human_count(flops.forward.flops)} "
            f"FLOPs (FLOPs = 2 x MACs), plus {human_count(flops.forward.other_flops)} other FLOPs "
            "(element-wise, normalisation, softmax)"
        ),
        f"Activations saved for backward: {human_bytes(trace.total)}",
    ]
    if flops.uncounted:
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(flops.uncounted.items()))
        notes.append(f"Uncounted operators (no formula): {listed}")
    return SummaryTable(rows=rows, total=total, flops=flops, params=params, notes=notes)
