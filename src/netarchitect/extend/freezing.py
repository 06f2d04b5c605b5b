"""Freeze and unfreeze parameters by glob, and the table of what is trainable.

Globs match parameter names (``stem.conv.weight``) or any of their modules' names
(``stem``, ``blocks.0``); on a spec-built Network the ``nodes.`` prefix may be left out
(``s1_*`` matches ``nodes.s1_b0.conv1.weight``). Every glob must match something: the
error names it and the closest names. Nothing changes unless every glob is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from ._edit import Patterns, is_spec_built, match, module_names

__all__ = ["TrainableSummary", "freeze", "trainable_summary", "unfreeze"]


def _names(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter name (tied ones under each of their names), also ``nodes.``-less."""
    named = dict(model.named_parameters(remove_duplicate=False))
    if is_spec_built(model):
        named.update({k[len("nodes."):]: p for k, p in list(named.items())
                      if k.startswith("nodes.")})
    return named


def _set(model: nn.Module, patterns: Patterns, flag: bool, what: str) -> list[str]:
    named = _names(model)
    hints = [*named, *module_names(model)]
    if is_spec_built(model):
        hints = [h for h in hints if not h.startswith("nodes.")]
    hits = match(list(named), patterns, what=what, hints=hints)
    chosen = {id(named[n]) for n in hits}
    changed = []
    for name, p in model.named_parameters():
        if id(p) in chosen:
            p.requires_grad_(flag)
            changed.append(name)
    return changed


def freeze(model: nn.Module, patterns: Patterns = "*") -> list[str]:
    """Stop gradients to the parameters matched by ``patterns`` (in place); returns their
    names. A frozen weight stays bit-identical through optimiser steps (it gets no
    gradient). BatchNorm running statistics still update in training mode."""
    return _set(model, patterns, False, "freeze")


def unfreeze(model: nn.Module, patterns: Patterns = "*") -> list[str]:
    """Let gradients reach the parameters matched by ``patterns`` (in place); returns
    their names."""
    return _set(model, patterns, True, "unfreeze")


@dataclass(frozen=True)
class TrainableSummary:
    """Trainable and total parameters per group (each parameter counted once)."""

    rows: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def trainable(self) -> int:
        return sum(r[1] for r in self.rows)

    @property
    def total(self) -> int:
        return sum(r[2] for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``summary.json``)."""
        return {
            "trainable": self.trainable,
            "frozen": self.total - self.trainable,
            "total": self.total,
            "groups": [{"name": n, "trainable": t, "total": a} for n, t, a in self.rows],
        }

    def table(self, title: str = "trainable parameters") -> Table:
        """A rich table: group, trainable, frozen, total, trainable share."""
        table = Table(title=title)
        table.add_column("group")
        for column in ("trainable", "frozen", "total", "trainable %"):
            table.add_column(column, justify="right")
        for name, t, a in [*self.rows, ("total", self.trainable, self.total)]:
            if name == "total" and self.rows:
                table.add_section()
            share = f"{100 * t / a:.1f}" if a else "—"
            table.add_row(name, f"{t:,}", f"{a - t:,}", f"{a:,}", share)
        return table

    def __rich__(self) -> Table:
        return self.table()


def _group(name: str, depth: int, spec_built: bool) -> str:
    parts = name.split(".")
    if spec_built and parts[0] == "nodes":
        parts = parts[1:]
    return ".".join(parts[: min(depth, len(parts) - 1) or 1])


def trainable_summary(
    model: nn.Module, *, depth: int | None = None, console: Console | None = None
) -> TrainableSummary:
    """Trainable/total parameters grouped by the first ``depth`` parts of their names
    (default: per node of a Network, two parts otherwise); printed to ``console`` when
    given (``rich.print(summary)`` prints it too)."""
    spec_built = is_spec_built(model)
    depth = depth if depth is not None else (1 if spec_built else 2)
    groups: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        counts = groups.setdefault(_group(name, depth, spec_built), [0, 0])
        counts[0] += p.numel() if p.requires_grad else 0
        counts[1] += p.numel()
    summary = TrainableSummary([(n, t, a) for n, (t, a) in groups.items()])
    if console is not None:
        console.print(summary.table())
    return summary
