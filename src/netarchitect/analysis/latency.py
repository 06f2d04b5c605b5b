"""Wall-clock latency of the forward and forward+backward pass: median and IQR."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._common import Inputs, call_model, is_meta, tensors_in

__all__ = ["LatencyReport", "Timing", "latency"]


@dataclass
class Timing:
    """Repeated measurements in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        """Interquartile range (75th - 25th percentile, inclusive method)."""
        if len(self.samples_ms) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples_ms, n=4, method="inclusive")
        return q3 - q1

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "samples_ms": self.samples_ms}


@dataclass
class LatencyReport:
    """Forward and (optionally) forward+backward timings of one model and input."""

    forward: Timing
    forward_backward: Timing | None
    threads: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "forward": self.forward.to_dict(),
            "forward_backward": self.forward_backward.to_dict() if self.forward_backward else None,
            "threads": self.threads,
            "device": self.device,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # pragma: no cover - no GPU in CI
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> Timing:
    for _ in range(warmup):
        fn()
    _synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing(samples)


def latency(
    model: nn.Module,
    inputs: Inputs,
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
    backward: bool = True,
) -> LatencyReport:
    """Time ``model(inputs)`` (and forward+backward when ``backward``) on real tensors.

    ``threads`` sets ``torch.set_num_threads`` for the measurement only. The backward
    pass starts from gradient ones at every floating-point output that requires grad;
    parameters' ``.grad`` are restored afterwards.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if is_meta(inputs, model):
        raise ValueError("latency needs real tensors; the model or inputs are on the meta device")
    first = next(iter(tensors_in(inputs) or list(model.parameters())), None)
    device = first.device if first is not None else torch.device("cpu")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            forward = _time(lambda: call_model(model, inputs), device, warmup, repeats)
        fwd_bwd = _time_backward(model, inputs, device, warmup, repeats) if backward else None
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return LatencyReport(forward, fwd_bwd, used, str(device))


def _time_backward(
    model: nn.Module, inputs: Inputs, device: torch.device, warmup: int, repeats: int
) -> Timing | None:
    params = list(model.parameters())
    saved = [p.grad for p in params]

    def step() -> None:
        out = [t for t in tensors_in(call_model(model, inputs)) if t.requires_grad]
        if not out:
            raise ValueError("latency(backward=True): no output requires grad")
        torch.autograd.backward(out, [torch.ones_like(t) for t in out])
        for p in params:
            p.grad = None

    try:
        with torch.enable_grad():
            return _time(step, device, warmup, repeats)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
