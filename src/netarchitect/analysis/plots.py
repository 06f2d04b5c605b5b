"""PNG plots of analysis reports (matplotlib's Agg canvas: no display, no global backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._io import atomic_write

if TYPE_CHECKING:
    from .doctor import DoctorReport
    from .scaling import ScalingReport

__all__ = ["plot_gradient_flow", "plot_scaling"]


def _save(figure: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def _positive(values: list[float]) -> list[float]:
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]


def plot_gradient_flow(report: DoctorReport, path: str | Path) -> Path:
    """Gradient norm per weight layer and activation std per leaf module (log scale)."""
    figure = Figure(figsize=(10, 7))
    grads, acts = figure.subplots(2, 1)
    names = [g.name for g in report.layers]
    grads.bar(range(len(names)), _positive([g.grad_norm for g in report.layers]), color="tab:blue")
    grads.set_yscale("log")
    grads.set_ylabel("gradient norm")
    grads.set_title(f"Gradient flow - {report.verdict}")
    grads.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    stds = _positive([a.std for a in report.activations])
    acts.plot(range(len(stds)), stds, marker="o", color="tab:orange")
    acts.set_yscale("log")
    acts.set_ylabel("activation std")
    acts.set_xlabel("leaf module (execution order)")
    return _save(figure, path)


def plot_scaling(report: ScalingReport, path: str | Path) -> Path:
    """One log-log panel per metric with the fitted power law."""
    names = list(report.values)
    figure = Figure(figsize=(4 * max(len(names), 1), 3.5))
    axes = figure.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, name in zip(axes, names):
        values = _positive(report.values[name])
        ax.loglog(report.sizes, values, marker="o", label="measured")
        exponent = report.exponents.get(name, math.nan)
        if math.isfinite(exponent) and math.isfinite(values[0]):
            fitted = [values[0] * (s / report.sizes[0]) ** exponent for s in report.sizes]
            ax.loglog(report.sizes, fitted, linestyle="--", label=f"~ size^{exponent:.2f}")
        ax.set_title(name)
        ax.set_xlabel("size")
        ax.legend(fontsize=8)
    return _save(figure, path)
