"""How cost grows with input size: measurements at several sizes and fitted exponents.

For each size ``s`` the model ``factory(s)`` runs on ``input_fn(s)``; every metric is
measured and a power law ``metric ≈ c * s**k`` is fitted by least squares on
``log(metric)`` vs ``log(s)`` (``numpy.polyfit``). Self-attention FLOPs grow as
``T**2`` in the sequence length; convolution FLOPs as ``H*W`` (exponent 1 in pixels).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ._common import Inputs
from .flops import count_flops
from .latency import latency
from .memory import trace_activations

__all__ = ["METRICS", "ScalingReport", "fit_exponent", "scaling"]

Metric = Callable[[nn.Module, Inputs], float]


def _flops(model: nn.Module, inputs: Inputs) -> float:
    return float(count_flops(model, inputs).flops)


def _other_flops(model: nn.Module, inputs: Inputs) -> float:
    return float(count_flops(model, inputs).other_flops)


def _memory(model: nn.Module, inputs: Inputs) -> float:
    return float(trace_activations(model, inputs).total)


def _latency(model: nn.Module, inputs: Inputs) -> float:
    return latency(model, inputs, warmup=1, repeats=5, backward=False).forward.median_ms


METRICS: dict[str, Metric] = {
    "flops": _flops,
    "other_flops": _other_flops,
    "memory": _memory,
    "latency": _latency,
}
"""Built-in metrics: ``flops`` (2 x MACs), ``other_flops``, ``memory`` (bytes of
activations saved for backward), ``latency`` (forward median, ms)."""


def fit_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Slope of ``log(values)`` against ``log(sizes)``; NaN when a value is not positive."""
    if len(sizes) < 2 or any(v <= 0 or not math.isfinite(v) for v in values):
        return math.nan
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float)), 1)
    return float(slope)


@dataclass
class ScalingReport:
    """Measurements (``values[metric][i]`` at ``sizes[i]``) and fitted exponents."""

    sizes: list[float]
    values: dict[str, list[float]]
    exponents: dict[str, float] = field(default_factory=dict)
    plot_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes,
            "values": self.values,
            "exponents": self.exponents,
            "plot_path": self.plot_path,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self, path: str | Path) -> Path:
        """Write a log-log plot of every metric with its fitted power law."""
        from .plots import plot_scaling

        return plot_scaling(self, path)


def _resolve(metric: str | Metric | tuple[str, Metric]) -> tuple[str, Metric]:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
        return metric, METRICS[metric]
    if isinstance(metric, tuple):
        return metric
    return getattr(metric, "__name__", "metric"), metric


def scaling(
    factory: Callable[[Any], nn.Module],
    sizes: Sequence[float],
    *,
    input_fn: Callable[[Any], Inputs],
    metrics: Sequence[str | Metric | tuple[str, Metric]] = ("flops", "memory", "latency"),
    plot_path: str | Path | None = None,
) -> ScalingReport:
    """Measure ``metrics`` of ``factory(s)`` on ``input_fn(s)`` for each ``s`` in ``sizes``.

    A metric is a name from :data:`METRICS`, a callable ``(model, inputs) -> float`` or a
    ``(name, callable)`` pair. ``plot_path`` also writes the log-log plot (PNG).
    """
    if len(sizes) < 2:
        raise ValueError(f"scaling needs at least two sizes, got {list(sizes)}")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"sizes must be positive, got {list(sizes)}")
    resolved = [_resolve(m) for m in metrics]
    values: dict[str, list[float]] = {name: [] for name, _ in resolved}
    for size in sizes:
        model = factory(size)
        inputs = input_fn(size)
        for name, fn in resolved:
            values[name].append(float(fn(model, inputs)))
    report = ScalingReport(
        sizes=[float(s) for s in sizes],
        values=values,
        exponents={name: fit_exponent(sizes, vals) for name, vals in values.items()},
    )
    if plot_path is not None:
        report.plot_path = str(report.plot(plot_path))
    return report
