"""The compute cost of diffusion sampling: measured over the whole sampling loop with
:func:`~netarchitect.analysis.count_flops`, and predicted as ``steps × one denoiser call``.

The samplers call the denoiser exactly once per step (on ``2B`` samples with classifier-free
guidance), so the denoiser's share of the loop (``by_module["model"]`` of the measured
count) is exactly ``steps × one call``, MACs and other FLOPs alike; the samplers' own update is
elementwise (no MACs; a few FLOPs per element per step, the rest of ``by_module[""]``).
Tests hold both to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..analysis.flops import Count, FlopResult, count_flops
from .errors import GenerativeError
from .samplers import ddim_sample, ddpm_sample
from .schedules import NoiseSchedule

__all__ = ["SamplingLoop", "count_sampling_flops", "predicted_sampling_flops", "sampling_steps"]

SAMPLERS = ("ddim", "ddpm")


def sampling_steps(schedule: NoiseSchedule, sampler: str = "ddim", steps: int = 50) -> int:
    """Denoiser calls of one sampling run: ``T`` for DDPM, ``steps`` for DDIM."""
    if sampler not in SAMPLERS:
        raise GenerativeError(f"sampler: {sampler!r} is not one of {SAMPLERS}")
    return schedule.num_steps if sampler == "ddpm" else int(steps)


class SamplingLoop(nn.Module):
    """``forward(x_T) -> x_0``: one sampling run of ``model`` as a module, so tools that take
    a module and its inputs (``count_flops``, latency) measure the whole loop.
    ``options`` go to :func:`ddim_sample` / :func:`ddpm_sample` (``steps`` for DDIM only)."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, sampler: str = "ddim",
                 **options: Any) -> None:
        super().__init__()
        sampling_steps(schedule, sampler)
        self.model, self.schedule, self.sampler, self.options = model, schedule, sampler, options

    def forward(self, x_T: Tensor) -> Tensor:
        run = ddim_sample if self.sampler == "ddim" else ddpm_sample
        return run(self.model, self.schedule, x_T=x_T, **self.options)


def _one_call(model: nn.Module, shape: Sequence[int], y: Tensor | None,
              guidance_scale: float) -> tuple[Any, ...]:
    b = shape[0] * (1 if guidance_scale == 1.0 else 2)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    x = torch.zeros(b, *shape[1:], device=device)
    t = torch.zeros(b, dtype=torch.long, device=device)
    if y is None:
        return (x, t)
    return (x, t, torch.zeros(b, dtype=torch.long, device=device))


def predicted_sampling_flops(model: nn.Module, schedule: NoiseSchedule, shape: Sequence[int],
                             *, sampler: str = "ddim", steps: int = 50, y: Tensor | None = None,
                             guidance_scale: float = 1.0) -> Count:
    """``steps × count_flops(one denoiser call)`` (batch ``2B`` with guidance), as a
    :class:`~netarchitect.analysis.flops.Count`; works on ``meta``."""
    calls = sampling_steps(schedule, sampler, steps)
    one = count_flops(model, _one_call(model, shape, y, guidance_scale)).forward
    return Count(one.macs * calls, one.other_flops * calls, one.calls * calls)


def count_sampling_flops(model: nn.Module, schedule: NoiseSchedule, shape: Sequence[int],
                         *, sampler: str = "ddim", seed: int = 0, **options: Any) -> FlopResult:
    """Count the FLOPs of one real sampling run of ``model`` from ``x_T ~ N(0, I)`` of
    ``shape`` (the samplers' ``options``: ``steps``, ``eta``, ``y``, ``guidance_scale``...)."""
    x_T = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    p = next(iter(model.parameters()), None)
    if p is not None:
        x_T = x_T.to(p.device, p.dtype)
    return count_flops(SamplingLoop(model, schedule, sampler, **options), (x_T,))
